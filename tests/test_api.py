"""augrun from Python (augrun.api), in this process as a notebook runs it: what train, sweep, preview, compare_runs and
load return; bad input raising the line the command line prints; a stop (SIGINT, a notebook's stop button) that
checkpoints, raises KeyboardInterrupt naming the call that resumes, and a resume that continues bitwise."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SMOKE, read_metrics, without_timing
from hydra.core.global_hydra import GlobalHydra
from matplotlib.figure import Figure
from PIL import Image

import augrun
from augrun import signals
from augrun.cli import main
from augrun.commands.compare import compare_command
from augrun.commands.preview import preview_command
from augrun.compare import RunResult
from augrun.run import checkpoint

# experiment=smoke shrunk further: 3 steps of 64 an epoch, no DataLoader workers (each would be a process to start)
TINY = [*SMOKE, "trainer.workers=0", "dataset.train_size=192", "dataset.test_size=64"]


@pytest.fixture
def caller_signal_handling():
    """The process's SIGINT/SIGTERM handling before the test, put back after it: the command line's main() installs
    augrun's for the rest of the process, as a command may."""
    handlers = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    yield handlers
    signals.SignalFlag._instance = None
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def test_train_returns_the_run_it_wrote_where_the_command_line_would(in_workdir: Path, capsys):
    run = augrun.train(*TINY, "trainer.epochs=2")
    assert run.dir.parent.parent == in_workdir / "outputs"  # outputs/<date>/<time>, from the working directory
    assert run.status == "completed" and run.ok
    assert run.metrics == read_metrics(run.dir) and [r["epoch"] for r in run.metrics] == [1, 2]
    assert run.summary == json.loads((run.dir / "summary.json").read_text())
    assert run.final["test_acc"] == run.metrics[-1]["test_acc"]
    figure = run.curves()
    assert isinstance(figure, Figure) and len(figure.axes[0].lines) == 3  # train loss, train acc, test acc

    printed = capsys.readouterr().out
    assert printed.count("examples/sec on ['cpu']") == 1 and printed.count("train_loss") == 1  # nothing twice

    loaded = augrun.load(run.dir)
    assert isinstance(loaded, augrun.Run) and loaded.metrics == run.metrics and loaded.summary == run.summary


def test_metrics_to_pandas_or_a_clear_error_without_it():
    rows = [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": 0.6}]
    run = augrun.Run.from_result(RunResult(Path("run"), {}, 0, "completed", rows, {"final": rows[-1]}, None))
    if importlib.util.find_spec("pandas") is None:  # optional: either branch is the contract
        with pytest.raises(ModuleNotFoundError, match=r"pip install pandas"):
            run.metrics.to_pandas()
    else:
        assert list(run.metrics.to_pandas()["test_acc"]) == [0.5, 0.6]


def test_two_trains_in_one_process_leave_the_caller_as_it_was(in_workdir: Path, caller_signal_handling):
    argv = list(sys.argv)
    first = augrun.train(*TINY, "trainer.epochs=1")
    second = augrun.train(*TINY, "trainer.epochs=1", "seed=1")
    assert first.dir != second.dir and first.ok and second.ok  # started in the same second: <time> and <time>-1
    assert without_timing(first.metrics) != without_timing(second.metrics)
    assert sys.argv == argv  # Hydra read its command line from sys.argv; the caller's is back
    assert not GlobalHydra.instance().is_initialized()  # the kernel's own hydra.initialize() would work
    assert {s: signal.getsignal(s) for s in signals.STOP_SIGNALS} == caller_signal_handling  # a kernel's Ctrl-C works


@pytest.mark.parametrize("nprocs", [1, 2])
def test_train_from_a_thread_runs_and_leaves_the_main_thread_its_signal_handling(nprocs: int, in_workdir: Path,
                                                                                  caller_signal_handling):
    # a notebook or an app may train in a thread of its own; only the main thread can set signal handlers
    outcome: dict = {}
    rendezvous = {name: os.environ.get(name) for name in ("MASTER_ADDR", "MASTER_PORT")}

    def train_in_thread() -> None:
        try:
            outcome["run"] = augrun.train(*TINY, "trainer.epochs=1", f"trainer.nprocs={nprocs}")
        except BaseException as error:  # reported by the assertion below, not lost in the thread
            outcome["error"] = error

    thread = threading.Thread(target=train_in_thread)
    thread.start()
    thread.join()
    assert "error" not in outcome, repr(outcome.get("error"))
    run = outcome["run"]
    assert run.ok and [r["epoch"] for r in run.metrics] == [1]
    assert run.summary["devices"] == ["cpu"] * nprocs
    assert {s: signal.getsignal(s) for s in signals.STOP_SIGNALS} == caller_signal_handling
    # the ranks' address was theirs alone: left here, it would read as half a torchrun set-up to the next call
    assert {name: os.environ.get(name) for name in rendezvous} == rendezvous


def test_a_second_call_while_one_runs_is_refused_in_one_line(in_workdir: Path, monkeypatch, caller_signal_handling):
    # A call from a thread holds the process's Hydra until it returns. The real train, made to wait at its start so
    # that the second calls surely come while it runs.
    from augrun.commands import train

    inside, release = threading.Event(), threading.Event()
    real_execute = train.execute

    def train_once_released(*args, **kwargs):
        inside.set()
        release.wait(60)
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(train, "execute", train_once_released)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(run=augrun.train(*TINY, "trainer.epochs=1")))
    thread.start()
    try:
        assert inside.wait(60)
        for call in (lambda: augrun.train(*TINY), lambda: augrun.sweep(*TINY), lambda: augrun.preview()):
            with pytest.raises(augrun.UserError) as refused:
                call()
            message = str(refused.value)
            assert "\n" not in message and "another augrun call is running in this process" in message
    finally:
        release.set()
        thread.join()
    assert outcome["run"].ok  # the first call was not disturbed
    assert augrun.preview("aug=flip_only").size  # and once it has returned, the next call runs


def test_sweep_returns_its_runs_and_the_comparison_at_its_root(in_workdir: Path):
    sweep = augrun.sweep(*TINY, "aug=none,flip_only", "hydra.sweep.dir=sweep")
    assert sweep.dir == in_workdir / "sweep" and [run.dir.name for run in sweep.runs] == ["0", "1"]
    assert all(run.ok for run in sweep.runs) and sweep.failed == []
    rows = {row["group"]: row for row in sweep.comparison.rows}
    with open(in_workdir / "sweep" / "comparison.csv") as file:
        written = {row["group"]: row for row in csv.DictReader(file)}
    assert set(rows) == set(written) == {"aug=none", "aug=flip_only"}
    for group, row in rows.items():  # the table as numbers: the CSV's values, unrounded
        assert row["n_seeds"] == int(written[group]["n_seeds"]) == 1
        assert row["test_acc_mean"] == pytest.approx(float(written[group]["test_acc_mean"]), rel=1e-5)
    assert rows["aug=flip_only"]["delta_vs_none"] == pytest.approx(
        rows["aug=flip_only"]["test_acc_mean"] - rows["aug=none"]["test_acc_mean"])
    assert isinstance(sweep.comparison.figure(), Figure)
    assert "| aug=none |" in sweep.comparison._repr_markdown_()  # how Jupyter shows it

    loaded = augrun.load(in_workdir / "sweep")
    assert isinstance(loaded, augrun.Sweep) and loaded.comparison.rows == sweep.comparison.rows
    again = augrun.compare_runs(*sweep.runs, out="again")  # Runs, as paths would be
    assert again.rows == sweep.comparison.rows
    assert (in_workdir / "again" / "comparison.csv").read_text() == (in_workdir / "sweep" / "comparison.csv").read_text()


def test_a_stop_between_two_sweep_jobs_names_the_sweeps_resume(in_workdir: Path, monkeypatch, capsys,
                                                                caller_signal_handling):
    """A signal that lands after job 0 ended and before job 1 started: the sweep stops there, and its one line says how
    to resume it (the command line used to say "nothing to resume"); the resume keeps job 0 and runs job 1."""
    from augrun import rundir
    final_test_acc = rundir.final_test_acc

    def job_ended(run_dir):
        if Path(run_dir).name == "0":
            signal.raise_signal(signal.SIGTERM)
        return final_test_acc(run_dir)
    monkeypatch.setattr(rundir, "final_test_acc", job_ended)
    with pytest.raises(SystemExit) as exited:
        main(["train", "-m", *TINY, "seed=0,1", "hydra.sweep.dir=sweep"])
    monkeypatch.setattr(rundir, "final_test_acc", final_test_acc)  # (undo() would also leave in_workdir)
    assert exited.value.code == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"augrun: stopped by signal 15 before job 1 started. Resume the sweep with the same command plus: "
        f"hydra.sweep.dir={in_workdir / 'sweep'} resume=true")
    assert not (in_workdir / "sweep" / "1" / "metrics.jsonl").exists()
    job_0 = (in_workdir / "sweep" / "0" / "metrics.jsonl").read_text()

    resumed = augrun.sweep(*TINY, "seed=0,1", "hydra.sweep.dir=sweep", "resume=true")
    assert resumed.dir == in_workdir / "sweep" and [run.ok for run in resumed.runs] == [True, True]
    assert (in_workdir / "sweep" / "0" / "metrics.jsonl").read_text() == job_0  # kept, not run again


def test_preview_returns_the_grid_the_command_line_writes(in_workdir: Path):
    image = augrun.preview("aug=flip_color_crop", "seed=3")
    assert isinstance(image, Image.Image) and image.size == (600, 300)  # the book's 2x4 grid at scale 1.5
    assert list(in_workdir.iterdir()) == []  # drawn into a temporary file: nothing left in the working directory
    preview_command(["aug=flip_color_crop", "seed=3", "out=cli.png"])
    with Image.open(in_workdir / "cli.png") as written:
        assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(image.convert("RGB")))


# the same bad input to the command line and to the API: (API call, command line)
BAD_INPUT = {
    "unknown key": (lambda: augrun.train(*SMOKE, "trainer.batchsize=3"),
                    lambda: main(["train", *SMOKE, "trainer.batchsize=3"])),
    "unknown option": (lambda: augrun.sweep(*SMOKE, "aug=none,bogus"),
                       lambda: main(["train", "-m", *SMOKE, "aug=none,bogus"])),
    "preview value": (lambda: augrun.preview("rows=0"), lambda: preview_command(["rows=0"])),
    "compare path": (lambda: augrun.compare_runs("missing"), lambda: compare_command(["missing"])),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_raises_the_line_the_command_line_prints(case, in_workdir: Path, capsys, caller_signal_handling):
    api_call, command_line = BAD_INPUT[case]
    with pytest.raises(augrun.UserError) as raised:
        api_call()
    with pytest.raises(SystemExit) as exited:
        command_line()
    assert exited.value.code == 2
    assert capsys.readouterr().err == f"augrun: error: {raised.value}\n"
    assert list(in_workdir.iterdir()) == []  # refused before anything was written


def test_a_stop_checkpoints_raises_keyboard_interrupt_and_the_named_call_resumes_bitwise(in_workdir: Path, monkeypatch,
                                                                                          caller_signal_handling):
    run = [*TINY, "trainer.epochs=2", "aug=crop", "aug.backend=cpu"]  # a pipeline that draws, per image
    reference = augrun.train(*run, "hydra.run.dir=reference")

    # SIGINT, as Jupyter's stop button sends it to the kernel, raised by the 5th training step: epoch 2, step 2 of 3
    original_forward, steps = torch.nn.CrossEntropyLoss.forward, []

    def forward(self, logits, target):
        if torch.is_grad_enabled():
            steps.append(1)
            if len(steps) == 5:
                signal.raise_signal(signal.SIGINT)
        return original_forward(self, logits, target)
    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", forward)
    with pytest.raises(KeyboardInterrupt) as raised:
        augrun.train(*run, "hydra.run.dir=stopped")
    monkeypatch.undo()

    assert isinstance(raised.value, augrun.Interrupted) and raised.value.target.name == "stopped"
    state = torch.load(in_workdir / "stopped" / checkpoint.CHECKPOINT, weights_only=False)
    assert (state["epoch"], state["next_step"]) == (2, 2)  # mid-epoch: the epoch's first two steps are kept
    assert json.loads((in_workdir / "stopped" / "summary.json").read_text())["status"] == "stopped"
    assert {s: signal.getsignal(s) for s in signals.STOP_SIGNALS} == caller_signal_handling

    message = str(raised.value)
    call = message.partition("Resume with: ")[2]
    assert call.startswith("augrun.train(") and f"'hydra.run.dir={in_workdir / 'stopped'}', 'resume=true')" in call
    resumed = eval(call, {"augrun": augrun})  # the call the message names, as a user would paste it
    assert resumed.dir == in_workdir / "stopped" and resumed.ok
    assert without_timing(resumed.metrics) == without_timing(reference.metrics)  # bitwise: floats compared exactly


def test_a_runs_final_numbers_and_outcome_are_compares_own():
    """Run.final and Run.ok follow the one rule augrun compare uses: each final number from summary.json, else from
    the last epoch; a run without a summary is not ok."""
    rows = [{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3, "test_acc": 0.2, "lr": 0.1},
            {"epoch": 2, "train_loss": 1.5, "train_acc": 0.5, "test_acc": 0.4, "lr": 0.1}]
    without_summary = RunResult(Path("run"), {}, 0, "failed", rows, {}, "no summary.json")
    run = augrun.Run.from_result(without_summary)
    assert run.final == {"train_loss": 1.5, "train_acc": 0.5, "test_acc": 0.4} and not run.ok
    partial = RunResult(Path("run"), {}, 0, "completed", rows, {"status": "completed", "final": {"train_acc": 0.5}}, None)
    assert augrun.Run.from_result(partial).final == {"train_loss": 1.5, "train_acc": 0.5, "test_acc": 0.4}
    from augrun.compare.runs import final_numbers
    assert augrun.Run.from_result(partial).final == final_numbers(partial.summary, rows)
