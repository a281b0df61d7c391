"""What a run shows: the console (progress, a row per epoch, the book's closing lines) and the metrics files
(console), the trackers beside them (trackers), a run's outputs as one object (run_outputs), the book's curves
(curves) and the grids of augmented images (drawing)."""
