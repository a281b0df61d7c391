"""Shared test helpers: compose the real configs with Hydra's compose API, and run augrun as users do."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from augrun.config import register_schemas

# shrunk to seconds on a 2-core CPU: synthetic data, a tiny CNN, real DataLoader workers
SMOKE = ["experiment=smoke"]
METRIC_KEYS = {"epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds", "examples_per_s"}
TIMING_KEYS = {"seconds", "examples_per_s"}


def compose_train(*overrides: str):
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="augrun.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run_augrun(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m augrun ...` in a subprocess, as a user would run it (no shared state with the test process)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "augrun", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder with its size and mtime: compared before and after a failing command."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh working directory: augrun writes outputs/ relative to it."""
    return tmp_path
