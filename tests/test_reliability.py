"""Checkpoints, exact resume, signals, the NaN guard and a full disk: finished epochs are never lost."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, read_metrics, run_augrun, snapshot, without_timing

from augrun.cli import main
from augrun.run import checkpoint

pytestmark = pytest.mark.slow
# 4 epochs of 5 steps: long enough to be killed mid-run, short enough for CI
RUN = [*SMOKE, "trainer.epochs=4", "hydra.run.dir=run"]


def start(workdir: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "augrun", "train", *RUN, *overrides], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_first_checkpoint(workdir: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not (workdir / "run" / checkpoint.CHECKPOINT).exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)


def resume(workdir: Path, *overrides: str) -> list[dict]:
    """The resume, in this process: its exit status is not what these tests check (a failure raises here)."""
    with contextlib.chdir(workdir):
        main(["train", *RUN, *overrides, "resume=true"])
    return read_metrics(workdir / "run")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[dict]]:
    """The reference: each backend's run, never stopped."""
    reference = {}
    for backend in ("cpu", "gpu"):
        workdir = tmp_path_factory.mktemp(f"reference_{backend}")
        with contextlib.chdir(workdir):
            main(["train", *RUN, f"aug.backend={backend}", "aug=flip_color_crop"])
        reference[backend] = read_metrics(workdir / "run")
    return reference


# kill points after the first checkpoint: at once, and part-way into later epochs
@pytest.mark.parametrize("backend,delay", [("cpu", 0.0), ("gpu", 0.7)])
def test_kill_9_then_resume_gives_the_uninterrupted_metrics(backend, delay, workdir: Path, uninterrupted):
    overrides = (f"aug.backend={backend}", "aug=flip_color_crop")
    process = start(workdir, *overrides)
    wait_for_first_checkpoint(workdir, process)
    time.sleep(delay)
    process.kill()
    process.wait()
    records = resume(workdir, *overrides)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]  # appended without duplicates
    assert without_timing(records) == without_timing(uninterrupted[backend])  # bitwise: floats compared exactly


# to the process alone (a scheduler that signals the main PID); tests/test_signals.py sends them to the whole group
@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143)])
def test_signal_checkpoints_mid_epoch_and_exits_with_its_status(signum, status, workdir: Path, uninterrupted):
    overrides = ("aug.backend=cpu", "aug=flip_color_crop")
    process = start(workdir, *overrides)
    wait_for_first_checkpoint(workdir, process)
    time.sleep(0.5)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "resume=true" in stdout and "Traceback" not in stderr
    state = torch.load(workdir / "run" / checkpoint.CHECKPOINT, weights_only=False)
    assert state["next_step"] > 0 or state["epoch"] > 1
    assert without_timing(resume(workdir, *overrides)) == without_timing(uninterrupted["cpu"])


NAN_AT_SECOND_EPOCH = '''
# sitecustomize for the test: the loss turns NaN at the 8th training step (epoch 2, step 3: 5 steps an epoch)
import torch
original = torch.nn.CrossEntropyLoss.forward
calls = 0
def forward(self, logits, target):
    global calls
    loss = original(self, logits, target)
    if torch.is_grad_enabled():
        calls += 1
        if calls == 8:
            return loss * float("nan")
    return loss
torch.nn.CrossEntropyLoss.forward = forward
'''


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(workdir: Path):
    hooks = workdir / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(NAN_AT_SECOND_EPOCH)
    result = run_augrun("train", *RUN, "trainer.workers=0", "trainer.progress_updates=5", cwd=workdir,
                        env={"PYTHONPATH": str(hooks)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == ("augrun: error: NonFiniteLoss: loss became non-finite at epoch 2, "
                                                      "step 3; lower optim.lr or check the data (the last good "
                                                      "checkpoint is kept)")
    state = torch.load(workdir / "run" / checkpoint.CHECKPOINT, weights_only=False)
    assert (state["epoch"], state["next_step"]) == (2, 0)  # the end of epoch 1, before the NaN
    assert [r["epoch"] for r in read_metrics(workdir / "run")] == [1]


def test_resume_with_another_config_names_the_differences(workdir: Path):
    result = run_augrun("train", *RUN, "trainer.epochs=1", cwd=workdir)
    assert result.returncode == 0, result.stderr
    before = snapshot(workdir)
    changed = run_augrun("train", *SMOKE, "trainer.epochs=1", "hydra.run.dir=run", "resume=true", "optim.lr=0.01",
                         "aug=none", cwd=workdir)
    assert changed.returncode == 2 and "Traceback" not in changed.stderr
    (line,) = changed.stderr.strip().splitlines()
    assert line.startswith("augrun: error: resume: the config differs from the checkpoint's: ")
    assert "optim.lr (0.001 -> 0.01)" in line and "aug.train.RandomHorizontalFlip" in line
    assert snapshot(workdir) == before


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 256 KiB filesystem, so a write fails with ENOSPC as on a full disk (needs root to mount)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(tiny_disk: Path):
    path = tiny_disk / checkpoint.CHECKPOINT
    checkpoint.save_atomic({"epoch": 1, "weights": torch.zeros(10_000)}, path)  # 40 KB: fits
    with pytest.raises(OSError, match="the previous checkpoint is kept"):
        checkpoint.save_atomic({"epoch": 2, "weights": torch.zeros(100_000)}, path)  # 400 KB: does not
    assert torch.load(path, weights_only=False)["epoch"] == 1
    assert os.listdir(tiny_disk) == [checkpoint.CHECKPOINT]  # the partial temporary file is gone
