"""Where a run ran (summary.json's environment block), the intra-op thread choice, compare's warning about runs from
different machines, and the note that tells a long CPU run how long it will take."""
from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, refusal, run_augrun
from rich.console import Console
from test_compare import epochs_for, make_run

from augrun import environment
from augrun.cli import main
from augrun.compare import compare_paths
from augrun.report import run_outputs
from augrun.report.run_outputs import cpu_time_note, format_duration

SMOKE_WORKERS = 2  # conf/experiment/smoke.yaml
ENVIRONMENT_TYPES = {
    "augrun": str, "python": str, "torch": str, "torchvision": str, "cuda": (str, type(None)),
    "cudnn": (int, type(None)), "devices": list, "cpu": str, "cpu_count": int, "threads": int, "hostname": str,
    "git_commit": str, "git_dirty": bool, "command": str, "started_at": str, "finished_at": str,
}  # fmt: skip


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit: the working directory of a run."""
    git(tmp_path, "init", "-q")
    (tmp_path / "notes.txt").write_text("a\n")
    git(tmp_path, "add", "notes.txt")
    git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


@pytest.fixture
def restore_threads():
    """A run in this process sets torch's thread count; the tests after it get the default back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def summary_environment(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["environment"]


def test_a_run_records_where_it_ran(repo: Path):
    result = run_augrun("train", *SMOKE, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "augrun: note:" not in result.stdout  # seconds long: no projection note
    (run_dir,) = (repo / "outputs").glob("*/*")
    block = summary_environment(run_dir)
    assert set(block) == set(ENVIRONMENT_TYPES)
    for key, kind in ENVIRONMENT_TYPES.items():
        assert isinstance(block[key], kind), (key, block[key])
    assert block["command"] == "augrun train experiment=smoke"  # as typed, though Hydra got other arguments
    assert block["git_commit"] == git(repo, "rev-parse", "HEAD") and block["git_dirty"] is False  # outputs/: untracked
    assert block["threads"] == environment.intra_op_threads(cores=os.cpu_count(), ranks=1,
                                                            workers_per_rank=SMOKE_WORKERS, device_kind="cpu",
                                                            requested=None)
    assert block["devices"] == ["cpu: " + environment.cpu_model()] and block["cpu_count"] == os.cpu_count()
    started, finished = (datetime.datetime.fromisoformat(block[k]) for k in ("started_at", "finished_at"))
    assert started.utcoffset() == datetime.timedelta(0) and started <= finished


def test_git_state_is_the_commit_and_whether_tracked_files_changed(repo: Path, tmp_path_factory, monkeypatch):
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "untracked.txt").write_text("x")
    assert environment.git_state(repo) == {"git_commit": commit, "git_dirty": False}
    (repo / "notes.txt").write_text("b\n")
    assert environment.git_state(repo) == {"git_commit": commit, "git_dirty": True}
    outside = tmp_path_factory.mktemp("not_a_repo")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(outside.parent))  # in case the temp dir lies in a checkout
    assert environment.git_state(outside) == {"git_commit": None, "git_dirty": None}
    monkeypatch.setenv("PATH", "")  # no git at all
    assert environment.git_state(repo) == {"git_commit": None, "git_dirty": None}


@pytest.mark.parametrize("argv", [
    ["/venv/bin/python", "/venv/bin/augrun", "train", "aug=none", "x=a b"],
    ["python3", "-u", "-X", "dev", "-m", "augrun", "train", "aug=none", "x=a b"],
])  # fmt: skip
def test_the_command_is_written_as_typed(argv: list[str]):
    assert environment.command_line(argv) == "augrun train aug=none 'x=a b'"


@pytest.mark.parametrize("cores, ranks, workers, kind, requested, expected", [
    (2, 1, 4, "cpu", None, 1),     # the machine: the workers take every core, one thread is left
    (16, 1, 4, "cpu", None, 12),
    (16, 2, 2, "cpu", None, 6),    # two ranks share what their four workers leave
    (8, 2, 0, "cpu", None, 4),     # the gpu backend: no workers
    (8, 1, 4, "cuda", None, None),  # CUDA: torch's default
    (2, 1, 4, "cpu", 3, 3),        # trainer.threads wins, on either device
    (8, 1, 4, "cuda", 2, 2),
])  # fmt: skip
def test_the_thread_count_leaves_the_cores_the_workers_need(cores, ranks, workers, kind, requested, expected):
    assert environment.intra_op_threads(cores=cores, ranks=ranks, workers_per_rank=workers, device_kind=kind,
                                        requested=requested) == expected


def test_trainer_threads_must_be_at_least_one(in_workdir):
    assert "trainer.threads: got 0; must be >= 1 or null" in refusal(*SMOKE, "trainer.threads=0")


def test_the_projection_says_how_long_a_cpu_run_takes_and_what_is_faster():
    note = cpu_time_note(21.0, 10 * 50_000, threshold_s=600)  # the default run on a 2-core CPU
    assert note == ("augrun: note: on the CPU this run will take about 6 h 37 min (21 images/s); "
                    "faster: model=small_cnn, dataset.train_size=5000, or experiment=smoke")
    assert cpu_time_note(2000.0, 10 * 50_000, threshold_s=600) is None  # 250 s: nothing to say
    assert cpu_time_note(1000.0, 600_001, threshold_s=600) is not None
    assert [format_duration(s) for s in (40, 89, 600, 3600, 24_610)] == ["40 s", "1 min", "10 min", "1 h 0 min",
                                                                        "6 h 50 min"]


def test_a_cpu_run_over_the_threshold_prints_one_note_and_uses_trainer_threads(tmp_path: Path, monkeypatch, capsys,
                                                                               restore_threads):
    monkeypatch.setattr(run_outputs, "CPU_NOTE_SECONDS", 0.0)  # every run is long now
    main(["train", *SMOKE, "trainer.threads=2", f"hydra.run.dir={tmp_path}"])  # the real CLI, in this process
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("augrun: note:")]
    assert len(notes) == 1 and "on the CPU this run will take about " in notes[0], notes  # once, not every update
    assert torch.get_num_threads() == 2 and summary_environment(tmp_path)["threads"] == 2


def with_environment(run_dir: Path, **changes) -> None:
    path = run_dir / "summary.json"
    block = {"torch": "2.14.1", "torchvision": "0.29.1", "cuda": None, "cudnn": None, "python": "3.11.7",
             "devices": ["cpu: AMD EPYC"], **changes}
    path.write_text(json.dumps(json.loads(path.read_text()) | {"environment": block}))


def compare(tmp_path: Path, capsys) -> tuple[str, str]:
    compare_paths([tmp_path / "sweep"], tmp_path / "report", Console(file=io.StringIO()))
    return capsys.readouterr().err, (tmp_path / "report" / "comparison.md").read_text()


def test_compare_warns_once_when_runs_ran_on_different_devices_or_versions(tmp_path: Path, capsys):
    runs = [make_run(tmp_path / "sweep" / str(i), ["experiment=smoke", f"seed={i}"], epochs_for(0.5)) for i in range(3)]
    with_environment(runs[0])
    with_environment(runs[1], torch="2.11.0", devices=["NVIDIA H100 80GB HBM3"])
    # runs[2]: written before the environment block, left out of the check
    err, markdown = compare(tmp_path, capsys)
    expected = ("the runs compared ran on different devices (cpu: AMD EPYC; NVIDIA H100 80GB HBM3) or versions "
                "(torch 2.14.1, 2.11.0): timings are not comparable")
    assert err.strip().splitlines() == [f"augrun: warning: {expected}"]
    assert f"- warning: {expected}" in markdown


def test_compare_says_nothing_when_the_runs_ran_alike(tmp_path: Path, capsys):
    runs = [make_run(tmp_path / "sweep" / str(i), ["experiment=smoke", f"seed={i}"], epochs_for(0.5)) for i in range(3)]
    for run in runs[:2]:
        with_environment(run, hostname=run.name, started_at=run.name)  # what does not change timings may differ
    err, markdown = compare(tmp_path, capsys)
    assert "warning" not in err and "warning" not in markdown
