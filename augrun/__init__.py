"""augrun: config-driven image-augmentation experiments (train with and without augmentation, log, compare).

From Python: augrun.train(...), augrun.sweep(...), augrun.preview(...), augrun.compare_runs(...), augrun.load(...)
(augrun.api). They are imported on first use, so that `import augrun` stays cheap: no Hydra, no torch.
"""
API = ("train", "sweep", "preview", "compare_runs", "load", "Run", "Sweep", "Comparison", "UserError", "TrainingFailed",
       "Interrupted")
__all__ = list(API)


def __getattr__(name: str):
    if name == "__version__":  # from the installed metadata: pyproject.toml holds the one version
        from augrun.environment import augrun_version
        return augrun_version()
    if name in API:
        from augrun import api
        return getattr(api, name)
    raise AttributeError(f"module 'augrun' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))
