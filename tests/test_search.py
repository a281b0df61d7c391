"""Searching augmentation strength with a sweeper that picks values as it goes (Hydra's Optuna plugin): the pre-check
checks what the search may pick, each job returns its test accuracy as the objective, and the comparison ranks trials."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from helpers import MARKER_LINE, SMOKE, read_metrics, refusal, run_augrun, snapshot, without_timing
from test_signals import Augrun

from augrun import rundir
from augrun.cli import main
from augrun.config.command_line import parse_command_line
from augrun.config.compose import expand_jobs

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
OPTUNA = ["-m", *SMOKE, "hydra/sweeper=optuna", "aug=color_jitter"]


def test_the_pre_check_samples_each_searched_value_at_the_ends_of_its_range():
    jobs = expand_jobs(parse_command_line([*OPTUNA, "aug.train.ColorJitter.brightness=interval(0,1)",
                                           "seed=choice(0,1,2)", "trainer.epochs=range(1,4)"]))
    varied = [{o.split("=")[0]: o.split("=")[1] for o in job if o.split("=")[0] in
               ("aug.train.ColorJitter.brightness", "seed", "trainer.epochs")} for job in jobs]
    assert varied == [
        {"aug.train.ColorJitter.brightness": "0.0", "seed": "0", "trainer.epochs": "1"},
        {"aug.train.ColorJitter.brightness": "1.0", "seed": "0", "trainer.epochs": "1"},
        {"aug.train.ColorJitter.brightness": "0.0", "seed": "1", "trainer.epochs": "1"},
        {"aug.train.ColorJitter.brightness": "0.0", "seed": "2", "trainer.epochs": "1"},
        {"aug.train.ColorJitter.brightness": "0.0", "seed": "0", "trainer.epochs": "3"},
    ]


def test_a_range_the_run_cannot_use_is_refused_before_the_search(in_workdir: Path):
    message = refusal(*OPTUNA, "aug.train.ColorJitter.hue=interval(0,0.9)")
    assert message.startswith("aug.train.ColorJitter.hue: got 0.9")


def test_the_search_preset_composes_as_a_maximising_optuna_search():
    (job, *others) = expand_jobs(parse_command_line(["-m", "experiment=aug_search"]))
    assert "aug.train.ColorJitter.brightness=0.0" in job and len(others) == 1


def test_a_missing_sweeper_plugin_says_how_to_install_it(in_workdir: Path):
    assert "pip install 'augrun[optuna]'" in refusal("-m", *SMOKE, "hydra/sweeper=optunna")


@pytest.mark.slow
def test_a_three_trial_search_maximises_test_accuracy_and_ranks_its_trials(workdir: Path):
    result = run_augrun("train", *OPTUNA, "aug.train.ColorJitter.brightness=interval(0,1)", "hydra.sweeper.n_trials=3",
                        "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=0", "hydra.sweep.dir=search",
                        cwd=workdir)
    assert result.returncode == 0, result.stderr
    root = workdir / "search"
    accuracy = {job: read_metrics(root / job)[-1]["test_acc"] for job in ("0", "1", "2")}
    best = yaml.safe_load((root / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(accuracy.values())  # the objective Optuna saw is each run's final test accuracy
    report = (root / "comparison.md").read_text()
    trials = report.split("## Trials, best first")[1].splitlines()[4:7]
    assert [row.split("|")[1].strip() for row in trials] == sorted(accuracy, key=lambda job: -accuracy[job])
    assert (root / "search.png").is_file()


def test_a_diverging_trial_is_a_failed_trial_and_the_search_goes_on(workdir: Path):
    result = run_augrun("train", *OPTUNA, "optim.lr=choice(0.001,1e30)", "hydra.sweeper.n_trials=3",
                        "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=0", "hydra.sweep.dir=search",
                        cwd=workdir)
    assert result.returncode == 1, result.stderr  # failed jobs, as in any sweep: not a traceback that ends it
    assert "Traceback" not in result.stderr and "returned nan" not in result.stderr
    root = workdir / "search"
    assert sorted(p.name for p in root.iterdir() if p.name.isdigit()) == ["0", "1", "2"]  # every trial ran
    assert "NonFiniteLoss" in (root / "comparison.md").read_text()
    assert result.stderr.strip().splitlines()[-1].startswith("augrun: error: ") and "sweep job(s) failed" in \
        result.stderr.strip().splitlines()[-1]


# a search of 3 one-epoch trials of 5 steps, in this process one after another: the step marker (test_signals) comes at
# the process's 7th training step, trial 1's 2nd
SEARCH = [*OPTUNA, "trainer.workers=0", "trainer.epochs=1", "aug.train.ColorJitter.brightness=interval(0,1)",
          "hydra.sweeper.n_trials=3", "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=0"]
SEARCHED = "aug.train.ColorJitter.brightness"


def searched_value(job: Path) -> str:
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return next(o.split("=", 1)[1] for o in overrides if o.startswith(SEARCHED + "="))


@pytest.mark.slow
def test_a_stopped_search_continues_with_resume_as_if_it_had_never_stopped(in_workdir: Path, marker_hooks: Path):
    workdir = in_workdir
    main(["train", *SEARCH, "hydra.sweep.dir=whole"])  # in this process where the exit status is not the point
    run = Augrun(workdir, "train", *SEARCH, "hydra.sweep.dir=stopped", hooks=marker_hooks)
    run.wait_until(lambda: any(MARKER_LINE in line for line in run.stdout), f"line {MARKER_LINE!r}")
    os.killpg(run.process.pid, signal.SIGINT)
    status, _, stderr = run.finish()
    assert status == 130, stderr
    stopped = workdir / "stopped"
    assert rundir.job_progress(stopped / "0") == "completed"
    assert rundir.ended_status(stopped / "1") == "stopped" and rundir.job_progress(stopped / "1") == "interrupted"
    assert not (stopped / "2").exists()
    kept = snapshot(stopped / "0")

    main(["train", *SEARCH, "hydra.sweep.dir=stopped", "resume=true"])
    assert snapshot(stopped / "0") == kept  # the finished trial is told to the sampler, not run again
    for job in ("0", "1", "2"):  # the seeded sampler draws what it drew without the stop; trial 1 went on exactly
        assert searched_value(stopped / job) == searched_value(workdir / "whole" / job)
        assert without_timing(read_metrics(stopped / job)) == without_timing(read_metrics(workdir / "whole" / job))
    results = [yaml.safe_load((root / "optimization_results.yaml").read_text()) for root in (workdir / "whole", stopped)]
    assert results[0] == results[1]
    assert "## Trials, best first" in (stopped / "comparison.md").read_text()


def stopped_search(root: Path, value: str) -> None:
    """A search stopped after one trial that failed, as augrun leaves it: its root, the job's recorded overrides and
    its summary (a failed trial is kept as it is, so no checkpoint is needed to resume)."""
    (root / "0" / ".hydra").mkdir(parents=True)
    (root / rundir.SWEEP_MARKER).touch()
    (root / "0" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{SEARCHED}={value}", *SMOKE]))
    (root / "0" / rundir.SUMMARY).write_text(json.dumps({"status": "failed", "error": "NonFiniteLoss: ..."}))
    sweeper = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}
    (root / "0" / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": sweeper}}))


@pytest.mark.parametrize("change, expected", [
    (["hydra.sweeper.sampler.seed=1"], "resume: the search's job 0 ran with aug.train.ColorJitter.brightness="
                                       "0.5488135039273248, but the same search now draws"),
    (["hydra.sweeper.sampler.seed=null", f"{SEARCHED}=interval(0.6,1)"],
     "resume: the search's job 0 ran with aug.train.ColorJitter.brightness=0.5488135039273248, which is not in the "
     "searched range now"),
])
def test_resuming_a_search_with_another_search_is_one_line_and_changes_nothing(change, expected, in_workdir: Path,
                                                                                capsys):
    root = in_workdir / "search"
    stopped_search(root, "0.5488135039273248")  # what seed 0 draws first
    before = snapshot(root)
    with pytest.raises(SystemExit) as exit_:
        main(["train", *SEARCH, "hydra.sweep.dir=search", "resume=true", *change])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"augrun: error: {expected}"), lines
    assert snapshot(root) == before


def test_a_resumed_search_keeps_its_failed_trial_and_samples_the_rest(in_workdir: Path):
    root = in_workdir / "search"
    stopped_search(root, "0.5488135039273248")
    before = snapshot(root / "0")
    with pytest.raises(SystemExit) as exit_:
        main(["train", *SEARCH, "hydra.sweep.dir=search", "resume=true", "hydra.sweeper.n_trials=2"])
    assert exit_.value.code == 1  # the search holds a failed trial, as any sweep with a failed job
    assert snapshot(root / "0") == before  # failed, and the search went on knowing it: not run again
    assert searched_value(root / "1") == "0.7151893663724195"  # what seed 0 draws second
    assert read_metrics(root / "1")[-1]["epoch"] == 1
    assert "## Trials, best first" in (root / "comparison.md").read_text()


def test_a_resumed_search_with_its_own_optuna_storage_is_refused(in_workdir: Path):
    message = refusal(*SEARCH, "hydra.sweeper.storage=sqlite:///optuna.db", "resume=true")
    assert message.startswith("hydra.sweeper.storage: resume=true continues a search from its job directories")


# sitecustomize for the test: every Hydra job a process runs is recorded in $JOBS_LOG (joblib's workers included)
JOB_LOG_HOOK = """
import os
import hydra.core.utils as utils
original = utils.run_job
def run_job(*args, **kwargs):
    with open(os.environ["JOBS_LOG"], "a") as log:
        log.write(str(kwargs.get("config", args[0] if args else None).hydra.job.num) + "\\n")
    return original(*args, **kwargs)
utils.run_job = run_job
"""


@pytest.mark.slow
def test_a_signal_to_a_parallel_search_stops_it_without_asking_more_trials(workdir: Path, tmp_path: Path,
                                                                            monkeypatch):
    """joblib's workers stop on the signal augrun passes on and return: the search must not go on launching trials
    (each would stop at once, but a search of hundreds would outlast a scheduler's grace before SIGKILL)."""
    hooks, jobs_log, root = tmp_path / "hooks", tmp_path / "jobs.log", workdir / "search"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(JOB_LOG_HOOK)
    monkeypatch.setenv("JOBS_LOG", str(jobs_log))
    run = Augrun(workdir, "train", *SEARCH, "trainer.epochs=12", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={root}", hooks=hooks)
    run.wait_until(lambda: all((root / job / "metrics.jsonl").is_file() for job in ("0", "1")), "both trials training")
    run.process.send_signal(signal.SIGTERM)  # the sweep's own process alone, as a scheduler sends it
    status, _, stderr = run.finish()
    assert status == 143, stderr
    assert [rundir.ended_status(root / job) for job in ("0", "1")] == ["stopped", "stopped"]
    assert sorted(jobs_log.read_text().split()) == ["0", "1"]  # no trial launched after the stop
