"""The commands, below their argument handling: `train` (the pre-check, then Hydra's run of every job, and how each
ended), `preview`, `compare` and `ops`. Only the command line (augrun.cli) and the Python API (augrun.api) import
them; each returns objects or raises, and its caller says the outcome its own way (a line and an exit status, or a
Python exception)."""
