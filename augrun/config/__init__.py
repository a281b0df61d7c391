"""The config: its schema (typed dataclasses registered with Hydra's ConfigStore), the command line as Hydra reads it,
composing each job as Hydra will, and Hydra's errors said in one line. Nothing here trains or loads data."""
