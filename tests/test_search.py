"""Searching augmentation strength with a sweeper that picks values as it goes (Hydra's Optuna plugin): the pre-check
checks what the search may pick, each job returns its test accuracy as the objective, and the comparison ranks trials."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import SMOKE, read_metrics, refusal, run_augrun

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
