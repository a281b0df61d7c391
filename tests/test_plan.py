"""The pre-check hands its plan to the jobs: each job of a command is composed, checked and prepared once, its data
loaded once, and a job whose config the pre-check did not see (a search's trial) prepares itself."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SMOKE

import augrun
from augrun.data import datasets
from augrun.run import trainer

TINY = [*SMOKE, "trainer.workers=0", "dataset.train_size=128", "dataset.test_size=64"]


@pytest.fixture
def counted(monkeypatch):
    """Counts of trainer.prepare and of the dataset loads under it, in this process."""
    counts = {"prepare": 0, "rehearsed": 0, "load": 0}
    real_prepare, real_load = trainer.prepare, datasets.load_dataset

    def prepare(*args, **kwargs):
        counts["prepare"] += 1
        counts["rehearsed"] += bool(kwargs.get("rehearse"))
        return real_prepare(*args, **kwargs)

    def load(*args, **kwargs):
        counts["load"] += 1
        return real_load(*args, **kwargs)

    monkeypatch.setattr(trainer, "prepare", prepare)
    monkeypatch.setattr(trainer, "load_dataset", load)
    return counts


def test_a_run_is_prepared_once_by_the_precheck(in_workdir: Path, counted):
    run = augrun.train(*TINY)
    assert run.ok
    assert counted == {"prepare": 1, "rehearsed": 1, "load": 1}


def test_a_sweeps_jobs_are_prepared_once_each_and_share_one_copy_of_the_data(in_workdir: Path, counted):
    sweep = augrun.sweep(*TINY, "seed=0,1", "aug=none,flip_only")
    assert len(sweep.runs) == 4 and all(run.ok for run in sweep.runs)
    assert counted == {"prepare": 4, "rehearsed": 4, "load": 1}


def test_a_job_the_precheck_did_not_see_prepares_itself(in_workdir: Path, counted):
    """Optuna's trials take values between the ends of a range that the pre-check tried: each trial's own config is
    checked as it starts (no rehearsal), while the plans the pre-check made for the ends are not used for it."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = augrun.sweep(*TINY, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=maximize",
                         "hydra.sweeper.sampler.seed=0", "optim.lr=interval(0.0001,0.01)")
    assert len(sweep.runs) == 2 and all(run.ok for run in sweep.runs)
    # the pre-check: both ends of the interval, rehearsed; the trials: their own values, prepared as they start
    assert counted["rehearsed"] == 2 and counted["prepare"] == 4
