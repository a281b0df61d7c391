"""Input refused up front, by class: checkpoints that are not data, directories another run owns, values the schema
accepts but a run cannot use, malformed command lines and config files, and a stray torchrun environment.

Most cases call the pre-check in-process (the same code `augrun train` runs before Hydra); a few run augrun as a
subprocess to pin the exit status, the single stderr line and that nothing was written.
"""
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
from helpers import SMOKE, assert_user_error, compose_train, read_metrics, refusal, run_augrun, snapshot, without_timing

from augrun import conf, rundir
from augrun.augment.gpu import GPU_OPS
from augrun.augment.ops import parse_batch_pipeline, parse_train_pipeline
from augrun.cli import main
from augrun.commands import precheck
from augrun.config.command_line import parse_command_line
from augrun.config.compose import to_train_config
from augrun.errors import UserError
from augrun.run import checkpoint, dryrun, launchers


def nothing_written(workdir: Path) -> bool:
    return not any(workdir.iterdir())


# --- 1. a checkpoint is data, never code ------------------------------------------------------------------------------

class RunsCode:
    """Unpickling this runs a command: what a crafted checkpoint would do under full pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_checkpoint(path: Path, state) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path: Path):
    marker = tmp_path / "code_ran"
    path = write_checkpoint(tmp_path / "run" / "checkpoint.pt", {"config": RunsCode(marker), "epoch": 1})
    with pytest.raises(checkpoint.CheckpointError, match="is not an augrun checkpoint: it holds Python objects") as e:
        checkpoint.load(path)
    assert "GLOBAL posix.system" in str(e.value) and str(path) in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("state,expected", [
    ({"weights": torch.zeros(2)}, "not an augrun checkpoint (a torch file without augrun's format marker)"),
    ([1, 2, 3], "not an augrun checkpoint"),
    ({"format": "augrun-checkpoint", "epoch": 1, "config": {}}, "of format version None, this augrun reads version 2"),
    ({"format": "augrun-checkpoint", "version": 1}, "of format version 1"),
])
def test_a_torch_file_that_is_not_a_current_augrun_checkpoint_is_named(tmp_path: Path, state, expected):
    path = write_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(checkpoint.CheckpointError, match="^resume: ") as caught:
        checkpoint.load(path)
    assert expected in str(caught.value) and str(path) in str(caught.value)


def test_a_damaged_checkpoint_names_the_field(tmp_path: Path):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_atomic({"epoch": "one", "next_step": 0}, path)
    with pytest.raises(checkpoint.CheckpointError, match="is damaged: 'epoch' is str, expected int"):
        checkpoint.load(path)


def test_a_real_checkpoint_round_trips_as_data_with_every_rng(workdir: Path):
    result = run_augrun("train", *SMOKE, "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    state = checkpoint.load(workdir / "run" / "checkpoint.pt")  # weights_only: it would raise on any Python object
    before = torch.rand(3)
    checkpoint.restore_rng_states(checkpoint.rng_states())
    assert state["epoch"] == 2 and state["rng"]["numpy"]["keys"].dtype == torch.int64 and before.shape == (3,)


def test_resuming_from_a_crafted_checkpoint_exits_2_and_runs_nothing(workdir: Path):
    marker = workdir / "code_ran"
    write_checkpoint(workdir / "run" / "checkpoint.pt", {"config": RunsCode(marker)})
    result = run_augrun("train", *SMOKE, "hydra.run.dir=run", "resume=true", cwd=workdir)
    assert_user_error(result, "resume: run/checkpoint.pt is not an augrun checkpoint")
    assert not marker.exists()


# --- 2. no run ever writes into another run's files --------------------------------------------------------------

def make_run(path: Path) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    return path


def make_sweep(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "multirun.yaml").write_text("hydra: {}\n")
    make_run(path / "0")
    return path


@pytest.mark.parametrize("argv,expected", [
    (["-m", "seed=0,1", "hydra.sweep.subdir=x"], "hydra.sweep.subdir: jobs 0 and 1 would write to"),
    (["-m", "seed=0,1", "hydra.sweep.subdir=/tmp/elsewhere"], "hydra.sweep.subdir: /tmp/elsewhere puts job 0 outside"),
    (["-m", "seed=0,1", "hydra.sweep.subdir=../up"], "hydra.sweep.subdir: ../up puts job 0 outside"),
    (["-m", "aug=none,flip_only", "hydra.sweep.subdir=a${hydra.job.num}/${hydra.job.override_dirname}"], None),
    (["hydra.output_subdir=../other/.hydra"], "hydra.output_subdir: ../other/.hydra is outside the run directory"),
    (["hydra.output_subdir=/abs/.hydra"], "hydra.output_subdir: /abs/.hydra is outside"),
    (["hydra.run.dir=sweep"], "hydra.run.dir: sweep is a sweep root, not a run directory"),
    (["hydra.run.dir=sweep/0/inner"], "hydra.run.dir: sweep/0/inner is inside the run"),
    (["hydra.run.dir=sweep/new"], "hydra.run.dir: sweep/new is inside the sweep"),
    (["-m", "seed=0", "hydra.sweep.dir=run/sweep"], "hydra.sweep.dir: run/sweep is inside the run"),
    (["-m", "seed=0", "hydra.sweep.dir=run"], "hydra.sweep.dir: run holds a single run, not a sweep"),
    (["-m", "seed=0", "hydra.sweep.dir=sweep"], "hydra.sweep.dir: sweep already holds a sweep; valid: resume=true"),
    (["hydra.run.dir=run"], "hydra.run.dir: run already holds a run; valid: resume=true"),
    (["hydra.run.dir=."], "already holds the run or sweep"),
    (["-m", "seed=0", "hydra.sweep.dir=."], "already holds the run or sweep"),
    (["hydra.run.dir=a_file"], "hydra.run.dir: cannot write under a_file (not a writable directory)"),
    (["hydra.run.dir=a_file/run"], "hydra.run.dir: cannot write under a_file (not a writable directory)"),
    (["hydra.run.dir=dangling/run"], "hydra.run.dir: dangling is a broken symbolic link"),
])
def test_a_directory_owned_by_another_run_or_sweep_is_refused(in_workdir: Path, argv, expected):
    make_run(in_workdir / "run")
    make_sweep(in_workdir / "sweep")
    (in_workdir / "a_file").write_text("")
    (in_workdir / "dangling").symlink_to(in_workdir / "missing")
    before = snapshot(in_workdir)
    if expected is None:  # the per-job subdirs differ: accepted (claimed, so a directory appears)
        precheck.precheck_train(parse_command_line([*SMOKE, *argv]), visible_gpus=lambda: 0)
        return
    assert expected in refusal(*SMOKE, *argv)
    assert snapshot(in_workdir) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_path_on_a_special_file_system_is_refused_before_anything(in_workdir: Path):
    assert "hydra.run.dir: cannot create /proc/augrun-run" in refusal(*SMOKE, "hydra.run.dir=/proc/augrun-run")


def test_a_claim_is_exclusive_and_a_clock_named_directory_moves_aside(tmp_path: Path):
    first = rundir.claim(tmp_path / "12-00-00", "hydra.run.dir", kind="run", resume=False, may_rename=True)
    second = rundir.claim(tmp_path / "12-00-00", "hydra.run.dir", kind="run", resume=False, may_rename=True)
    assert (first.name, second.name) == ("12-00-00", "12-00-00-1")
    with pytest.raises(rundir.RunDirError, match="hydra.run.dir: .* is already taken by another run"):
        rundir.claim(tmp_path / "12-00-00", "hydra.run.dir", kind="run", resume=False, may_rename=False)


@pytest.mark.slow
def test_two_runs_started_in_the_same_second_never_share_a_directory(workdir: Path):
    # the directory is named by the clock's year: both runs resolve the same name, whatever their timing
    overrides = [*SMOKE, "hydra.run.dir=outputs/${now:%Y}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "augrun", "train", *overrides], cwd=workdir, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    runs = sorted(p.name for p in (workdir / "outputs").iterdir())
    year = runs[0]
    assert runs == [year, f"{year}-1"]
    for run in runs:
        assert len(read_metrics(workdir / "outputs" / run)) == 1  # one run's epoch each, never both in one file


def test_a_clock_named_directory_left_by_a_run_that_ended_in_the_same_second_is_passed_over(in_workdir: Path):
    year = time.strftime("%Y")
    (in_workdir / "outputs" / year).mkdir(parents=True)
    (in_workdir / "outputs" / year / rundir.RUN_MARKER).touch()  # a run that ended before this one started
    claimed = precheck.precheck_train(parse_command_line([*SMOKE, "hydra.run.dir=outputs/${now:%Y}"]),
                                      visible_gpus=lambda: 0).claimed
    assert claimed == Path("outputs") / f"{year}-1"


# --- 4. an interrupted sweep continues --------------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_true_continues_a_sweep_keeping_finished_jobs(in_workdir: Path, capsys):
    workdir = in_workdir
    sweep = ["-m", *SMOKE, "seed=0,1,2", "trainer.epochs=2", "hydra.sweep.dir=sweep"]
    reference_dir = workdir / "reference"
    reference_dir.mkdir()
    with contextlib.chdir(reference_dir):  # the reference and the resume in this process: their exit is not the point
        main(["train", *sweep])
    # killed (the whole group, SIGKILL: no chance to clean up) once job 1 has checkpointed its first epoch
    process = subprocess.Popen([sys.executable, "-m", "augrun", "train", *sweep], cwd=workdir, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = workdir / "sweep"
    deadline = time.monotonic() + 120
    while not (root / "1" / "checkpoint.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended before job 1 checkpointed"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert rundir.job_progress(root / "1") == "interrupted" and not (root / "2").exists()
    kept = snapshot(root / "0")

    assert refusal(*sweep).startswith("hydra.sweep.dir: sweep already holds a sweep; valid: resume=true to continue it")
    capsys.readouterr()
    main(["train", *sweep, "resume=true"])
    assert "job 0 completed before; kept as it is" in capsys.readouterr().err
    assert {k: v for k, v in snapshot(root / "0").items() if not k.startswith(".hydra")} == \
        {k: v for k, v in kept.items() if not k.startswith(".hydra")}  # results untouched; Hydra rewrites its config
    for job in ("0", "1", "2"):  # finished, continued and started: each equal to the uninterrupted sweep's, bitwise
        assert without_timing(read_metrics(root / job)) == without_timing(read_metrics(reference_dir / "sweep" / job))
    assert "| all | 3 | 0 |" in (root / "comparison.md").read_text()


# --- 5. values the schema accepts but a run cannot use ----------------------------------------------------------

@pytest.mark.parametrize("overrides,expected", [
    (["optim.lr=nan"], "optim.lr: got nan; valid: a finite number"),
    (["optim.weight_decay=inf"], "optim.weight_decay: got inf; valid: a finite number"),
    (["aug=color_jitter", "aug.train.ColorJitter.brightness=nan"], "aug.train.ColorJitter.brightness: got nan"),
    (["aug=crop", "aug.train.RandomResizedCrop.scale=[0.1,inf]"], "aug.train.RandomResizedCrop.scale[1]: got inf"),
    (["aug=randaugment", "aug.train.RandAugment.magnitude=100"],
     "aug.train.RandAugment: magnitude 100 is not below num_magnitude_bins 31"),
    (["+aug.train.RandomCrop.size=64"], "aug.train.RandomCrop: fails on a 32x32 image: Required crop size (64, 64)"),
    (["+aug.train.RandomRotation.degrees=30", "+aug.train.RandomRotation.expand=true"],
     "aug.train: the pipeline gives images of different sizes"),
    (["dataset.image_size=1"], "model: small_cnn cannot train on 3x1x1 images"),
    (["aug=crop", "aug.train.RandomResizedCrop.size=1"], "model: small_cnn cannot train on 3x1x1 images"),
    (["dataset.train_size=1000000000"], "dataset.train_size: the decoded dataset needs about"),
    (["dataset.image_size=100000"], "dataset.image_size: the decoded dataset needs about"),
    (["+aug.batch.MixUp.alpha=0"], "aug.batch.MixUp"),
])
def test_a_value_the_run_cannot_use_is_refused_by_the_dry_run(in_workdir: Path, overrides, expected):
    assert expected in refusal(*SMOKE, *overrides)
    assert nothing_written(in_workdir)


def test_the_dry_run_refuses_on_the_gpu_backend_too(in_workdir: Path):
    message = refusal(*SMOKE, "aug.backend=gpu", "+aug.train.RandomCrop.size=64")
    assert message.startswith("aug.train.RandomCrop: fails on a 3x32x32 image")


@pytest.mark.slow
def test_a_dry_run_refusal_exits_2_leaving_nothing(workdir: Path):
    result = run_augrun("train", *SMOKE, "+aug.train.RandomCrop.size=64", cwd=workdir)
    assert_user_error(result, "aug.train.RandomCrop: fails on a 32x32 image")
    assert nothing_written(workdir)


# --- 6. malformed command lines and config files -------------------------------------------------------------------

@pytest.mark.parametrize("argv,expected", [
    (["+aug.train.ColorJitter=[0.5,0.5]"], "aug.train.ColorJitter: got [0.5, 0.5]; valid: a mapping of ColorJitter's"),
    (["+aug.train.ColorJitter=0.5"], "aug.train.ColorJitter: got 0.5; valid: a mapping"),
    (["aug.train=[1,2]"], "aug.train: must be a mapping of op name to its arguments"),
    (["aug.batch=3"], "aug.batch: must be a mapping of batch op name"),
    (["trainer=5"], "trainer=5: Config group override must be a string"),
    (["dataset.root=caf\u00e9/x"], "dataset.root=caf\u00e9/x: not a valid override"),
    (["seed=[1"], "seed=[1: not a valid override"),
    (["trainer.epochs={a:1"], "trainer.epochs={a:1: not a valid override"),
    (["--cfg"], "--cfg: needs one of job, hydra, all"),
    (["--cfg", "everything"], "--cfg: got 'everything'; valid: job, hydra, all"),
    (["--multi"], "--multi: unknown flag; valid: --multirun"),
    (["--config-path", "nowhere"], "--config-path: nowhere is not a directory"),
    (["--config-dir=nowhere"], "--config-dir: nowhere is not a directory"),
    (["-cn", "nope"], "--config-name: Cannot find primary config 'nope'"),
])
def test_a_malformed_command_line_is_one_line_naming_it(in_workdir: Path, argv, expected):
    assert refusal(*SMOKE, *argv).startswith(expected)


def test_a_bad_sweep_range_names_the_sweep(in_workdir: Path):
    assert "not a valid override" in refusal(*SMOKE, "-m", "seed=range(1,x)")


OPTUNA = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize"]


@pytest.mark.parametrize("argv,expected", [
    # a swept or searched range that gives nothing, or that a sampler cannot draw from, names its key
    (["-m", "seed=range(0,3,0)"], "seed: range(0,3,0): a step of 0 never reaches the stop"),
    (["-m", "seed=range(3,0)"], "seed: range(3,0) gives no values"),
    ([*OPTUNA, "optim.lr=interval(1,0)"], "optim.lr: interval(1,0): the start must be below the end"),
    ([*OPTUNA, "optim.lr=interval(0.1,0.1)"], "optim.lr: interval(0.1,0.1): the start must be below the end"),
    ([*OPTUNA, "optim.lr=tag(log,interval(0,1))"], "optim.lr: tag(log,interval(0,1)): a log scale needs a start"),
    # the sweeper's and launcher's own settings, checked as augrun's keys are
    ([*OPTUNA, "optim.lr=interval(0.001,0.01)", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials: got 0; valid: an"),
    ([*OPTUNA, "optim.lr=interval(0.001,0.01)", "hydra.sweeper.n_trials=-1"], "hydra.sweeper.n_trials: got -1"),
    ([*OPTUNA, "optim.lr=interval(0.001,0.01)", "hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs: got 0"),
    (["-m", "hydra/sweeper=optuna", "hydra.sweeper.direction=sideways", "optim.lr=interval(0.001,0.01)"],
     "hydra.sweeper.direction: got 'sideways'; valid: minimize, maximize"),
    (["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=0,1"], "hydra.launcher.n_jobs: got 0; valid: a"),
    (["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=0", "seed=0"],
     "hydra.launcher.timeout_min: got 0; valid: an integer >= 1"),
    (["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.tasks_per_node=0", "seed=0"],
     "hydra.launcher.tasks_per_node: got 0"),
])
def test_a_bad_sweep_range_or_plugin_setting_is_one_line_naming_its_key_and_nothing_is_made(in_workdir: Path, argv,
                                                                                              expected):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    before = snapshot(in_workdir)
    assert refusal(*SMOKE, *argv).startswith(expected)
    assert snapshot(in_workdir) == before


def write_aug(folder: Path, name: str, text: str) -> Path:
    (folder / "aug").mkdir(parents=True, exist_ok=True)
    (folder / "aug" / f"{name}.yaml").write_text(text)
    return folder


@pytest.mark.parametrize("yaml,expected", [
    ("train:\n  - RandomHorizontalFlip\n", "aug.train (in aug/mine.yaml): must be a mapping of op name to its"),
    ("train:\n  ColorJitter: [0.5, 0.5]\n", "aug.train.ColorJitter: got [0.5, 0.5]; valid: a mapping"),
    ("train:\n  RandomHorizontalFlip: {p: .inf}\n", "aug.train.RandomHorizontalFlip.p: got inf"),
])
def test_a_malformed_aug_yaml_in_a_config_dir_is_one_line(in_workdir: Path, yaml, expected):
    write_aug(in_workdir / "extra", "mine", yaml)
    assert refusal(*SMOKE, "--config-dir", "extra", "aug=mine").startswith(expected)


@pytest.mark.slow
def test_a_config_dir_adds_options_the_pre_check_and_hydra_both_see(workdir: Path):
    write_aug(workdir / "extra", "vertical", "backend: cpu\ntrain:\n  RandomVerticalFlip: {p: 0.5}\n")
    result = run_augrun("train", *SMOKE, "--config-dir", "extra", "aug=vertical", "hydra.run.dir=run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "RandomVerticalFlip" in (workdir / "run" / ".hydra" / "config.yaml").read_text()


def test_an_unknown_flag_exits_2_with_one_line(workdir: Path):
    assert_user_error(run_augrun("train", "--bogus", cwd=workdir), "--bogus: unknown flag")


# --- 8. the environment ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env,expected", [
    ({"RANK": "1"}, "RANK: set in the environment, but WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not"),
    ({"LOCAL_RANK": "0"}, "LOCAL_RANK: set in the environment, but RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not"),
    ({"RANK": "x", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK: got 'x'; valid: a non-negative"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK: got 2 with WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "h", "MASTER_PORT": "70000"}, "MASTER_PORT: got 70000"),
])
def test_a_partial_or_malformed_torchrun_environment_is_refused(env, expected):
    with pytest.raises(UserError) as caught:
        launchers.group_member(env)
    assert str(caught.value).startswith(expected)


def test_torchrun_environment_is_recognised_when_complete():
    assert launchers.group_member({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "29500"}).rank == 1
    assert launchers.group_member({}) is None


def test_an_inherited_rank_exits_2_instead_of_training_into_a_temporary_directory(workdir: Path):
    result = run_augrun("train", *SMOKE, cwd=workdir, env={"RANK": "1"})
    assert_user_error(result, "RANK: set in the environment, but WORLD_SIZE")
    assert nothing_written(workdir)


@pytest.mark.parametrize("aug", sorted(p.stem for p in (Path(conf.__file__).parent / "aug").glob("*.yaml")))
def test_every_shipped_pipeline_passes_the_dry_run_on_both_backends(aug, smoke_config):
    pipeline = to_train_config(compose_train(*SMOKE, f"aug={aug}")).aug
    train_ops, batch_ops = parse_train_pipeline(pipeline.train), parse_batch_pipeline(pipeline.batch)
    backends = ["cpu"] + (["gpu"] if all(spec.name in GPU_OPS for spec in train_ops) else [])
    d, m = smoke_config.dataset, smoke_config.model
    for backend in backends:
        dryrun.dry_run(train_ops=train_ops, batch_ops=batch_ops, backend=backend, image_size=d.image_size,
                       channels=d.channels, num_classes=d.num_classes, mean=None, std=None, model=m)


@pytest.mark.parametrize("argv,expected", [
    # the key the user wrote, not the one that happened to be checked first
    (["aug=randaugment", "aug.train.RandAugment.num_magnitude_bins=0"],
     "aug.train.RandAugment.num_magnitude_bins: got 0; valid: an integer >= 1"),
    (["aug=randaugment", "aug.train.RandAugment.num_magnitude_bins=5"],
     "aug.train.RandAugment: magnitude 9 is not below num_magnitude_bins 5"),
    (["aug=randaugment", "aug.train.RandAugment.magnitude=40"],
     "aug.train.RandAugment: magnitude 40 is not below num_magnitude_bins 31"),
    (["dataset.channels=1", "dataset.normalize=true"],
     "dataset.normalize: true for images of dataset.channels=1, with 3 dataset.mean and 3 dataset.std values"),
    (["dataset.normalize=true", "dataset.mean=[0.5]"], "dataset.normalize: true for images of dataset.channels=3, "
                                                       "with 1 dataset.mean and 3 dataset.std values"),
])
def test_a_weak_message_names_the_key_the_user_wrote(in_workdir: Path, argv, expected):
    assert refusal(*SMOKE, *argv).startswith(expected)


def test_a_plain_pickle_as_checkpoint_is_one_line_without_torchs_warning(tmp_path: Path, recwarn):
    import pickle
    (tmp_path / "checkpoint.pt").write_bytes(pickle.dumps({"format": "augrun-checkpoint"}))
    with pytest.raises(checkpoint.CheckpointError, match="is corrupt or unreadable"):
        checkpoint.load(tmp_path / "checkpoint.pt")
    assert [str(w.message) for w in recwarn] == []


# --- every command's outputs go through the run-directory rules -------------------------------------------------------

@pytest.mark.parametrize("where,owner", [("other_sweep", "other_sweep"), ("other_sweep/0", "other_sweep/0"),
                                         ("run", "run"), ("run/sub", "run")])
def test_compare_out_into_another_run_or_sweep_is_refused_and_leaves_it_as_it_was(in_workdir: Path, where, owner):
    from augrun.commands.compare import run_compare
    make_sweep(in_workdir / "sweep")
    make_sweep(in_workdir / "other_sweep")
    make_run(in_workdir / "run")
    before = snapshot(in_workdir)
    with pytest.raises(UserError) as caught:
        run_compare(["sweep", f"--out={where}"], console=None)
    assert str(caught.value).startswith(f"--out: {where} is in {in_workdir / owner}, a ")
    assert "valid: a path outside every run and sweep" in str(caught.value)
    assert snapshot(in_workdir) == before


def test_a_sweeps_own_report_may_be_rebuilt_in_its_root(in_workdir: Path):
    assert rundir.check_output_place(in_workdir / "sweep", "--out", own=(make_sweep(in_workdir / "sweep"),)) is None


@pytest.mark.parametrize("out", ["run/preview.png", "sweep/grid.png", "sweep/0/x/grid.png"])
def test_preview_out_into_a_run_or_sweep_is_refused(in_workdir: Path, out):
    from augrun.commands.preview_options import preview_options
    make_run(in_workdir / "run")
    make_sweep(in_workdir / "sweep")
    (in_workdir / "sweep" / "0" / "x").mkdir()
    with pytest.raises(UserError) as caught:
        preview_options([f"out={out}"])
    assert str(caught.value).startswith(f"out: {Path(out).parent} is in ")


def test_a_broken_tensorboard_install_is_refused_before_the_run_directory_exists(workdir: Path):
    """A tensorboard package that is there but fails to import: one line, exit 2, and no run directory."""
    broken = workdir / "site"
    (broken / "tensorboard").mkdir(parents=True)
    (broken / "tensorboard" / "__init__.py").write_text("raise ImportError('a broken install')\n")
    result = run_augrun("train", *SMOKE, "logger=tensorboard", "hydra.run.dir=run", cwd=workdir,
                        env={"PYTHONPATH": str(broken)})
    assert_user_error(result, "logger: tensorboard is installed but cannot be imported")
    assert not (workdir / "run").exists()
