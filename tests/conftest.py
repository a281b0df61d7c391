"""Fixtures shared by the tests; helpers.py has the functions."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import SMOKE, STEP_MARKER, compose_train

from augrun.config.compose import to_train_config


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory) -> Path:
    """Image folders' decoded caches go to $XDG_CACHE_HOME/augrun: a folder of the test session's, not the user's
    (subprocesses inherit it). Matplotlib keeps its own cache where it was, so that it builds no font list again."""
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(home, "matplotlib"))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache_home"))
    return Path(os.environ["XDG_CACHE_HOME"])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh working directory: augrun writes outputs/ relative to it."""
    return tmp_path


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch) -> Path:
    """A fresh working directory that is also the current one, for in-process pre-checks."""
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture(scope="session")
def smoke_config():
    """The smoke experiment's config, composed once from the real YAML files and typed (read-only: tests that change
    it compose their own)."""
    return to_train_config(compose_train(*SMOKE))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict[str, str]:
    """A real single-node Slurm for the module's tests (tests/slurm/start.sh), and the environment to use it; the test
    is skipped with the one-line reason where it cannot start. Without the sacct stand-in start.sh provides: augrun
    must not need sacct."""
    from slurm_cluster import slurm_env, start_cluster, stop_cluster
    folder = tmp_path_factory.mktemp("slurm")
    env = start_cluster(folder)
    if isinstance(env, str):
        if os.environ.get("AUGRUN_REQUIRE_SLURM") == "1":  # CI (.ci/run) started Slurm: a skip would hide a break
            pytest.fail(env)
        pytest.skip(env)
    full = slurm_env(env)
    full["PATH"] = full["PATH"].replace(str(folder), "/nonexistent")
    yield full
    stop_cluster(folder)


@pytest.fixture
def marker_hooks(tmp_path: Path) -> Path:
    """A folder for PYTHONPATH whose sitecustomize marks a process's MARKED_STEP-th training step (helpers.STEP_MARKER)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(STEP_MARKER)
    return hooks
