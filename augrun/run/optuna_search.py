"""Hydra's Optuna sweeper as augrun runs a search (`hydra/sweeper=optuna`, which the pre-check points at
hydra_plugins.augrun_launchers.AugrunOptunaSweeper, whose work is done here): the plugin's search, which a stopped
search continues with `resume=true` instead of starting over in its directory.

A search's record is its job directories, not Optuna's storage (in memory by default): each holds the values its
trial ran with (Hydra's .hydra/overrides.yaml) and how it ended (summary.json). Resuming tells Optuna those trials in
job order, batch by batch as the search asked them, so that the sampler knows every earlier result: a completed trial
with its final test accuracy, a failed one as failed (the search went on knowing it failed; it is not run again). The
trials the stop interrupted continue from their checkpoints under their own job numbers, and the rest are sampled.

With a seeded sampler (hydra.sweeper.sampler.seed) the resumed search is the uninterrupted one: each recorded trial
is drawn again from the same history, which takes the sampler's random state to where the stop left it, and must
draw the values its job ran with (if not, the search was changed, and resuming is refused). Without a seed the
recorded values are handed to Optuna as they are (enqueued), and the later trials are drawn afresh.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from augrun import rundir, signals
from augrun.config.compose import sweep_job_dir
from augrun.errors import UserError, printable


@dataclass
class RecordedTrial:
    """A trial of a stopped search, as its job directory records it."""
    number: int
    run_dir: Path
    overrides: dict[str, str]   # every override of the job as Hydra recorded it, by key: the searched values among them
    ended: str                  # "completed" or "failed": kept as they are; "" (stopped, or never ended): runs again
    objective: float | None     # a completed trial's final test accuracy


def recorded_trials(cfg: DictConfig, root: Path, n_trials: int) -> dict[int, RecordedTrial]:
    """The trials of the search at `root` that wrote their job directory, by job number (a trial stopped before its
    first checkpoint gave its directory back, and is not one of them)."""
    trials = {}
    for number in range(n_trials):
        run_dir = sweep_job_dir(cfg, number, root)
        try:
            listed = yaml.safe_load((run_dir / rundir.CONFIG_DIR / rundir.OVERRIDES).read_text())
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as error:
            raise UserError("resume", f"cannot read the overrides of the search's job {printable(run_dir)} ({error}); "
                            "valid: a search directory as augrun wrote it") from None
        overrides = dict(str(o).split("=", 1) for o in listed or [] if "=" in str(o))
        progress = rundir.job_progress(run_dir)
        failed = progress != "completed" and rundir.ended_status(run_dir) == "failed"
        ended = "completed" if progress == "completed" else "failed" if failed else ""
        objective = rundir.final_test_acc(run_dir) if ended == "completed" else None
        trials[number] = RecordedTrial(number, run_dir, overrides, ended, objective)
    return trials


def total_trials(cfg: DictConfig) -> int:
    return int(OmegaConf.select(cfg, "hydra.sweeper.n_trials"))


def sweep(impl, arguments: list[str]) -> None:
    """The plugin's search (`impl`: its OptunaSweeperImpl), continued from the recorded trials when resuming."""
    import optuna
    # each failed job says why in its own line; the plugin's log would add a traceback-like list of them, and Optuna's
    # a line per study it creates or loads (one that holds nothing to act on: the search keeps no study between runs)
    logging.getLogger(impl.__module__).setLevel(logging.CRITICAL)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    impl.launcher.launch = _stopping_on_signals(impl.launcher.launch)
    if impl.config.get("resume"):
        _replay(impl, arguments)
    try:
        impl.sweep(arguments)
    except ValueError as error:
        if "No trials are completed" not in str(error):
            raise
        # every trial failed, so the plugin has no best one to write: the comparison and exit status say what failed


def _replay(impl, arguments: list[str]) -> None:
    """Tell a new study the recorded trials, run the interrupted ones again, and leave the rest to the plugin."""
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    impl._process_searchspace_config()
    distributions, fixed = create_params_from_overrides([*impl._parse_sweeper_params_config(), *arguments])
    distributions = {**(impl.search_space_distributions or {}), **distributions}
    for name in fixed:
        distributions.pop(name, None)
    sampler, total = impl.sampler, impl.n_trials
    if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
        grid = {name: impl._to_grid_sampler_choices(d) for name, d in distributions.items()}
        sampler, total = sampler(grid), min(total, math.prod(len(values) for values in grid.values()))
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=sampler,
                                directions=impl._get_directions())
    recorded = recorded_trials(impl.config, Path(impl.config.hydra.sweep.dir), impl.n_trials)
    redraw = OmegaConf.select(impl.config, "hydra.sweeper.sampler.seed") is not None
    done = max(recorded, default=-1) + 1
    for start in range(0, done, impl.n_jobs):
        numbers = range(start, min(start + impl.n_jobs, done))
        trials = []
        for number in numbers:
            if not redraw and number in recorded:
                study.enqueue_trial(_typed_values(recorded[number], distributions))
            trials.append(study.ask())
        overrides = impl._configure_trials(trials, distributions, fixed)
        if redraw:
            for number, drawn in zip(numbers, overrides):
                if number in recorded:
                    _check_redrawn(recorded[number], drawn, distributions)
        to_run = []
        for trial, number, job in zip(trials, numbers, overrides):
            if number in recorded and recorded[number].ended:
                _tell(study, trial, recorded[number].objective)
            else:
                to_run.append((trial, number, job))
        _run_again(impl, study, to_run)
    # the plugin's own loop samples the rest into the same study: the sampler (and its random state) is the one above
    impl.storage, impl.study_name = study._storage, study.study_name
    impl.job_idx, impl.n_trials = done, max(0, total - done)


def _stopping_on_signals(launch):
    """A launch after which the search asks no more trials once SIGINT/SIGTERM came: a parallel launcher's jobs (joblib)
    stopped in their workers and returned, and the plugin would go on launching trials that stop at once."""
    def launch_then_check(job_overrides, initial_job_idx):
        returns = launch(job_overrides, initial_job_idx=initial_job_idx)
        flag = signals.SignalFlag.installed()
        if flag.signum is not None:
            raise signals.Stopped(flag.signum, None)  # each stopped job has said how it stopped
        return returns
    return launch_then_check


def _run_again(impl, study, to_run: list) -> None:
    """Launch the interrupted (and never started) trials of a batch under their own job numbers, and tell results."""
    groups: list[list] = []
    for entry in to_run:  # the launcher numbers a launch's jobs consecutively: one launch per consecutive run
        if groups and groups[-1][-1][1] + 1 == entry[1]:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    for group in groups:
        returns = impl.launcher.launch([job for _, _, job in group], initial_job_idx=group[0][1])
        for (trial, _, _), result in zip(group, returns):
            _tell(study, trial, result.return_value)


def _tell(study, trial, objective) -> None:
    """A trial's result: its final test accuracy, or failed (augrun's failed jobs return no number)."""
    import optuna
    try:
        value = float(objective)
    except (TypeError, ValueError):
        value = math.nan
    try:
        if math.isfinite(value):
            study.tell(trial, values=[value], state=optuna.trial.TrialState.COMPLETE)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    except RuntimeError as error:  # GridSampler stops the study once its grid is done, as the plugin allows
        if "Study.stop" not in str(error):
            raise


def _check_redrawn(trial: RecordedTrial, drawn: tuple[str, ...], distributions: dict) -> None:
    drawn_values = dict(o.split("=", 1) for o in drawn if o.split("=", 1)[0] in distributions)
    recorded_values = {name: trial.overrides.get(name) for name in distributions}
    if drawn_values != recorded_values:
        raise UserError("resume", f"the search's job {trial.number} ran with {_listed(recorded_values)}, but the same "
                        f"search now draws {_listed(drawn_values)} for it; valid: the stopped search's own command "
                        "(its searched ranges, sampler and seed) plus resume=true")


def _typed_values(trial: RecordedTrial, distributions: dict) -> dict:
    """The recorded values of a trial as Optuna's distributions hold them, to enqueue them."""
    import optuna.distributions as d
    values = {}
    for name, distribution in distributions.items():
        text = trial.overrides.get(name)
        try:
            if isinstance(distribution, d.CategoricalDistribution):
                values[name] = next(c for c in distribution.choices if str(c) == text)
            elif isinstance(distribution, (d.IntUniformDistribution, d.IntLogUniformDistribution)):
                values[name] = int(text)
            else:
                values[name] = float(text)
        except (StopIteration, TypeError, ValueError):
            valid = False
        else:
            valid = distribution._contains(distribution.to_internal_repr(values[name]))
        if text is None or not valid:
            raise UserError("resume", f"the search's job {trial.number} ran with {name}={text}, which is not in the "
                            f"searched range now; valid: the stopped search's own command plus resume=true")
    return values


def _listed(values: dict) -> str:
    return ", ".join(f"{name}={value}" for name, value in values.items())
