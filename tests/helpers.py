"""Test helpers: compose the real configs with Hydra's compose API, run augrun as users do, and read what it wrote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from augrun.commands import precheck
from augrun.config.command_line import parse_command_line
from augrun.config.schema import register_schemas
from augrun.errors import UserError

# shrunk to seconds on a 2-core CPU: synthetic data, a tiny CNN, real DataLoader workers
SMOKE = ["experiment=smoke"]
METRIC_KEYS = {"epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds", "examples_per_s"}
TIMING_KEYS = {"seconds", "examples_per_s"}

MARKED_STEP = 7  # a process's 7th training step: epoch 2, step 2 of 5
MARKER_LINE = f"test: training step {MARKED_STEP}"

STEP_MARKER = f'''
# sitecustomize for the test, loaded by every Python process: at its {MARKED_STEP}th training step a process prints
# "{MARKER_LINE}", and from then on each step takes 0.3 s longer, so that a signal sent on reading the line lands
# mid-epoch however fast the machine is
import time
import torch
original = torch.nn.CrossEntropyLoss.forward
steps = 0
def forward(self, logits, target):
    global steps
    if torch.is_grad_enabled():
        steps += 1
        if steps == {MARKED_STEP}:
            print("{MARKER_LINE}", flush=True)
        if steps >= {MARKED_STEP}:
            time.sleep(0.3)
    return original(self, logits, target)
torch.nn.CrossEntropyLoss.forward = forward
'''


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


def assert_user_error(result, expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("augrun: error: "), output
    assert expected in lines[0], lines[0]


def refusal(*argv: str) -> str:
    """The one-line message the pre-check of `augrun train <argv>` refuses with (run in the current directory)."""
    with pytest.raises(UserError) as caught:
        precheck.precheck_train(parse_command_line(list(argv)), visible_gpus=lambda: 0)
    message = str(caught.value)
    assert "\n" not in message and message.strip() == message, message
    return message


def make_image_folder(root: Path, *, classes=("cat", "dog"), per_class: int = 2) -> None:
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32), (40 * i, 100, 200)).save(root / split / c / f"{i}.png")
