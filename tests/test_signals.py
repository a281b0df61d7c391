"""SIGINT/SIGTERM sent, as a terminal's Ctrl-C, `timeout` and Slurm send them, to augrun's whole process group.

Real processes and real signals: augrun runs in a session of its own, and the signal goes to its process group with
os.killpg, DataLoader workers and DDP ranks included. To be deterministic the tests signal on an observable event,
never after a fixed sleep alone: a line a training step prints (STEP_MARKER), or augrun's handler showing in /proc.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import MARKER_LINE, SMOKE, read_metrics, run_augrun, without_timing

from augrun import compare, signals
from augrun.cli import main
from augrun.run import checkpoint

pytestmark = pytest.mark.slow

TRAIN_SIZE = 320  # experiment=smoke: 5 steps of 64 an epoch
# the cpu backend, with DataLoader workers (trainer.workers=2 in experiment=smoke) and an augmentation that draws
RUN = [*SMOKE, "trainer.epochs=3", "aug=flip_color_crop", "aug.backend=cpu", "hydra.run.dir=run"]
# two DDP ranks; with DataLoader workers (2 each) where the test says so: on Pythons whose forked children can inherit a
# held interpreter lock (python/cpython#112275, before 3.11.10) the ranks' workers come from a forkserver
# (data.batches.worker_start_method), whose start costs seconds, so the other DDP tests keep workers=0
DDP = ["trainer.nprocs=2", "trainer.workers=0"]
DDP_WITH_WORKERS = ["trainer.nprocs=2", "trainer.workers=2"]
# Slurm sends SIGKILL this long after SIGTERM (KillWait's default): a stop must be over well within it
SLURM_KILL_WAIT_S = 30
class Augrun:
    """`python -m augrun ...` in a session of its own (its own process group), as a shell job or a Slurm step runs;
    stdout and stderr are read as they come, so that the test can wait for a line."""

    def __init__(self, workdir: Path, *args: str, hooks: Path | None = None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"PYTHONPATH": str(hooks)} if hooks else {})}
        self.process = subprocess.Popen([sys.executable, "-m", "augrun", *args], cwd=workdir, env=env,
                                        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.readers = [threading.Thread(target=lines.extend, args=(stream,), daemon=True)
                        for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))]
        for reader in self.readers:
            reader.start()

    def wait_until(self, ready, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"augrun ended before {what}:\n{''.join(self.stderr)[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s"
            time.sleep(0.01)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        status = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(timeout)
        return status, "".join(self.stdout), "".join(self.stderr)


def stopped_mid_epoch(workdir: Path, *args: str, signum: int, hooks: Path, to_group: bool = True):
    """augrun signalled at MARKED_STEP: its exit status, stdout and stderr. It must be over well before Slurm would
    follow its SIGTERM with SIGKILL."""
    run = Augrun(workdir, *args, hooks=hooks)
    run.wait_until(lambda: any(MARKER_LINE in line for line in run.stdout), f"line {MARKER_LINE!r}")
    sent = time.monotonic()
    if to_group:
        os.killpg(run.process.pid, signum)  # the DataLoader workers and the ranks get it too
    else:
        run.process.send_signal(signum)  # the launcher alone, as a scheduler may signal it
    finished = run.finish()
    assert time.monotonic() - sent < SLURM_KILL_WAIT_S / 3
    return finished


def assert_one_clean_stop_line(stdout: str, stderr: str, signum: int, resume_hint: str) -> None:
    """The stop is told once, in one line naming the signal, the step and how to resume, and nothing went wrong."""
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "augrun: error" not in stderr, stderr
    notes = [line for line in (stdout + stderr).splitlines() if "stopped by signal" in line]
    assert len(notes) == 1, stdout + stderr
    assert notes[0].startswith(f"stopped by signal {signum} at epoch 2, step ")
    assert notes[0].endswith(f"; checkpoint saved. {resume_hint}")


def run_resume_hint(run_dir: Path) -> str:
    return f"Resume with the same overrides plus: hydra.run.dir={run_dir} resume=true"


def saved_position(run_dir: Path) -> tuple[int, int]:
    state = torch.load(run_dir / checkpoint.CHECKPOINT, weights_only=False)
    return state["epoch"], state["next_step"]


def resume(workdir: Path, *overrides: str) -> list[dict]:
    """The resume: in this process for one process (its exit status is not the point), as its own for DDP ranks."""
    if "trainer.nprocs=2" in overrides:
        result = run_augrun("train", *overrides, "resume=true", cwd=workdir)
        assert result.returncode == 0, result.stderr[-3000:]
    else:
        with contextlib.chdir(workdir):
            main(["train", *overrides, "resume=true"])
    return read_metrics(workdir / "run")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The reference: the same run, never stopped."""
    workdir = tmp_path_factory.mktemp("reference")
    with contextlib.chdir(workdir):
        main(["train", *RUN])
    return read_metrics(workdir / "run")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_group_signal_checkpoints_mid_epoch_and_resumes_bitwise(signum, workdir: Path, marker_hooks: Path,
                                                                 uninterrupted):
    status, stdout, stderr = stopped_mid_epoch(workdir, "train", *RUN, signum=signum, hooks=marker_hooks)
    assert status == 128 + signum
    assert_one_clean_stop_line(stdout, stderr, signum, run_resume_hint(workdir / "run"))
    epoch, step = saved_position(workdir / "run")
    assert epoch == 2 and 0 < step < 5  # mid-epoch: the partial epoch is kept
    assert json.loads((workdir / "run" / "summary.json").read_text())["status"] == "stopped"
    assert without_timing(resume(workdir, *RUN)) == without_timing(uninterrupted)  # bitwise: floats compared exactly


TEST_PASS_MARKER = "test: the last test pass"
# sitecustomize: once a process has trained RUN's 15 steps, the next model.eval() (the last epoch's test pass) prints
# TEST_PASS_MARKER and from then on every argmax (one per test batch) takes 0.5 s, so a signal sent on reading the
# line lands inside the test pass
SLOW_LAST_TEST_PASS = f'''
import time
import torch
loss_forward, module_eval, argmax = torch.nn.CrossEntropyLoss.forward, torch.nn.Module.eval, torch.Tensor.argmax
steps, slow = 0, False
def forward(self, logits, target):
    global steps
    steps += torch.is_grad_enabled()
    return loss_forward(self, logits, target)
def eval(self):
    global slow
    if steps >= 15 and not slow:
        slow = True
        print("{TEST_PASS_MARKER}", flush=True)
    return module_eval(self)
def slow_argmax(self, *args, **kwargs):
    if slow:
        time.sleep(0.5)
    return argmax(self, *args, **kwargs)
torch.nn.CrossEntropyLoss.forward, torch.nn.Module.eval, torch.Tensor.argmax = forward, eval, slow_argmax
'''


def test_a_signal_in_the_last_test_pass_stops_it_and_resume_runs_the_pass(workdir: Path, tmp_path: Path,
                                                                          uninterrupted):
    """The test pass hears a signal between its batches: a large test set does not hold a stop back, and the last
    epoch's pass does not swallow it (the run used to end as completed, exit 0)."""
    hooks = tmp_path / "slow_test_pass"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_LAST_TEST_PASS)
    run = Augrun(workdir, "train", *RUN, hooks=hooks)
    run.wait_until(lambda: any(TEST_PASS_MARKER in line for line in run.stdout), f"line {TEST_PASS_MARKER!r}")
    os.killpg(run.process.pid, signal.SIGTERM)
    status, stdout, stderr = run.finish()
    assert status == 143, stderr
    notes = [line for line in (stdout + stderr).splitlines() if "stopped by signal" in line]
    assert notes == [f"stopped by signal 15 in epoch 3's test pass; checkpoint saved. {run_resume_hint(workdir / 'run')}"]
    assert saved_position(workdir / "run") == (3, 5)  # the epoch's training is kept
    assert without_timing(resume(workdir, *RUN)) == without_timing(uninterrupted)


@pytest.mark.parametrize("signum,to_group,ddp", [(signal.SIGTERM, True, DDP_WITH_WORKERS), (signal.SIGINT, False, DDP)],
                         ids=["SIGTERM-to-group-2x2-workers", "SIGINT-to-launcher"])
def test_ddp_ranks_stop_at_the_same_step_and_resume(signum, to_group, ddp, workdir: Path, marker_hooks: Path):
    status, stdout, stderr = stopped_mid_epoch(workdir, "train", *RUN, *ddp, signum=signum, to_group=to_group,
                                               hooks=marker_hooks)
    assert status == 128 + signum
    assert_one_clean_stop_line(stdout, stderr, signum, run_resume_hint(workdir / "run"))
    assert "rank" not in stderr  # no rank reported as failed or died
    assert saved_position(workdir / "run")[0] == 2

    records = resume(workdir, *RUN, *ddp)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for record in records:  # every image counted once: the ranks stopped, checkpointed and resumed at the same step
        assert record["examples_per_s"] * record["seconds"] == pytest.approx(TRAIN_SIZE)


def test_signal_stops_a_sweep_and_marks_its_job_stopped(workdir: Path, marker_hooks: Path):
    sweep = workdir / "sweep"
    status, stdout, stderr = stopped_mid_epoch(workdir, "train", "-m", *SMOKE, *DDP, "trainer.epochs=3", "seed=0,1",
                                               f"hydra.sweep.dir={sweep}", signum=signal.SIGTERM, hooks=marker_hooks)
    assert status == 143
    assert_one_clean_stop_line(stdout, stderr, signal.SIGTERM, "Resume the sweep with the same command plus: "
                                                               f"hydra.sweep.dir={sweep} resume=true")
    assert not (sweep / "1").exists()  # no later job started
    job = compare.load_run(sweep / "0")
    assert job.status == "stopped" and job.error == "stopped after 1 of 3 epochs"


class Numbers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1000

    def __getitem__(self, index: int) -> int:
        return index


def test_a_dataloader_worker_ignores_sigterm_from_others_and_obeys_its_parent():
    """What makes a group SIGTERM harmless to the workers, seen directly: one from elsewhere (Slurm, `kill` on the
    group) leaves a worker serving batches; one from its parent (DataLoader's terminate(), at exit) ends it cleanly."""
    loader = torch.utils.data.DataLoader(Numbers(), batch_size=10, num_workers=1, multiprocessing_context="fork",
                                         worker_init_fn=signals.leave_to_parent)
    with signals.held_for_children():
        batches = iter(loader)
    worker = batches._workers[0]
    assert next(batches).tolist() == list(range(10))
    subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)  # sent by another process
    # more batches than the worker had prefetched: it must go on making them
    assert [next(batches)[0].item() for _ in range(10)] == list(range(10, 110, 10))
    os.kill(worker.pid, signal.SIGTERM)  # sent by the parent
    worker.join(10)
    assert worker.exitcode == 0


def wait_for_augrun_handler(run: Augrun) -> None:
    """Until `augrun train` has installed its handler, the first thing it does: SIGTERM shows as caught in /proc
    (Python itself catches SIGINT from the start, SIGTERM only when asked)."""
    status = Path(f"/proc/{run.process.pid}/status")

    def sigterm_caught() -> bool:
        fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        return bool(int(fields["SigCgt"], 16) & (1 << (signal.SIGTERM - 1)))
    run.wait_until(sigterm_caught, "SIGTERM handler")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc to see the handler")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_before_training_exits_with_one_line_and_leaves_nothing(signum, workdir: Path):
    run = Augrun(workdir, "train", *RUN)
    wait_for_augrun_handler(run)  # the pre-check (importing torch, loading data) then takes seconds more
    os.killpg(run.process.pid, signum)
    status, stdout, stderr = run.finish()
    assert status == 128 + signum
    assert stderr == f"augrun: stopped by signal {signum} before training started; nothing to resume\n"
    assert stdout == "" and list(workdir.iterdir()) == []


def test_a_signal_to_a_parallel_sweeps_pid_stops_its_running_jobs_and_resume_finishes_them(workdir: Path):
    """joblib runs the jobs in worker processes that `kill PID` on the sweep never reaches: augrun passes it on."""
    sweep = workdir / "sweep"
    command = ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMOKE, "trainer.workers=0",
               "trainer.epochs=12", "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    run = Augrun(workdir, *command)
    run.wait_until(lambda: all((sweep / job / "metrics.jsonl").is_file() for job in ("0", "1")), "both jobs training")
    run.process.send_signal(signal.SIGTERM)  # the sweep's own process alone, as a scheduler sends it
    status, stdout, stderr = run.finish()
    assert status == 143, stderr
    assert [compare.load_run(sweep / job).status for job in ("0", "1")] == ["stopped", "stopped"], \
        [(sweep / job / "summary.json").read_text() for job in ("0", "1")]
    assert not (sweep / "2").exists()  # no later job started

    resumed = run_augrun(*command, "resume=true", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert all(compare.load_run(sweep / job).status == "completed" for job in ("0", "1", "2"))
