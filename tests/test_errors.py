"""Bad input: exit status 2, one line naming the key and what would be valid, no traceback, nothing written."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, assert_user_error, make_image_folder, refusal, run_augrun, snapshot
from PIL import Image

from augrun.commands import precheck
from augrun.config.command_line import parse_command_line
from augrun.errors import CheckpointError, CompareError, ConfigError, DataError, RunDirError, UserError

# (overrides, text the one-line message must contain)
CONFIG_ERRORS = {
    "unknown key": (["trainer.batchsize=3"], "trainer.batchsize: unknown key; valid keys here: epochs, batch_size"),
    "unknown top-level key": (["+foo=1"], "foo: unknown key"),
    "wrong type": (["trainer.batch_size=abc"], "trainer.batch_size"),
    "unknown group option": (["aug=bogus"], "aug=bogus: unknown option; valid: augmix, autoaugment, brightness, color_jitter"),
    "unknown aug op": (["+aug.train.RandomFoo.p=1"], "aug.train.RandomFoo: unknown augmentation op"),
    "unknown aug argument": (["+aug.train.RandomHorizontalFlip.q=1"], "aug.train.RandomHorizontalFlip.q: unknown argument"),
    "probability above 1": (["aug.train.RandomHorizontalFlip.p=1.5"], "aug.train.RandomHorizontalFlip.p: got 1.5"),
    "negative jitter": (["aug=brightness", "aug.train.ColorJitter.brightness=-1"], "aug.train.ColorJitter.brightness: got -1"),
    "scale min > max": (["aug=crop", "aug.train.RandomResizedCrop.scale=[1,0.1]"], "aug.train.RandomResizedCrop.scale"),
    "ratio with zero": (["aug=crop", "aug.train.RandomResizedCrop.ratio=[0,1]"], "aug.train.RandomResizedCrop.ratio"),
    "crop size zero": (["aug=crop", "aug.train.RandomResizedCrop.size=0"], "aug.train.RandomResizedCrop.size: got 0"),
    "batch size zero": (["trainer.batch_size=0"], "trainer.batch_size: got 0; must be >= 1"),
    "epochs zero": (["trainer.epochs=0"], "trainer.epochs: got 0; must be >= 1"),
    "negative lr": (["optim.lr=-0.1"], "optim.lr: got -0.1"),
    "missing device index": (["trainer.devices=[7]"], "trainer.devices: GPU index [7] does not exist"),
    "bad backend": (["aug.backend=tpu"], "aug.backend: got 'tpu'; valid: auto, cpu, gpu"),
    "gpu backend lacking an op": (["aug.backend=gpu", "+aug.train.RandomRotation.degrees=10"],
                                  "aug.backend: gpu has no version of RandomRotation"),
    "sweep without -m": (["seed=0,1"], "seed=0,1: a sweep needs -m"),
    "missing dataset, no network": (["dataset=cifar10", "dataset.root=nowhere", "dataset.download=false"],
                                    "dataset.root: nowhere/cifar-10-batches-py not found"),
    "imagefolder without a root": (["dataset=imagefolder"], "dataset.root: required, and not set"),
    "resume without checkpoint": (["resume=true", "hydra.run.dir=empty_run"], "resume: no checkpoint.pt in empty_run"),
}
if not torch.cuda.is_available():
    CONFIG_ERRORS["cuda on a machine without one"] = (["trainer.devices=cuda"], "trainer.devices: cuda requested")


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_error_is_one_line_naming_the_key(case, workdir: Path, monkeypatch):
    """In-process: the pre-check `augrun train` runs before Hydra (the subprocess cases below pin the exit status)."""
    overrides, expected = CONFIG_ERRORS[case]
    (workdir / "empty_run").mkdir()
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    with pytest.raises(UserError) as caught:
        precheck.precheck_train(parse_command_line([*SMOKE, *overrides]), visible_gpus=lambda: 0)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot(workdir) == before  # stopped before any directory was claimed


@pytest.mark.parametrize("case", ["unknown key", "unknown group option", "gpu backend lacking an op",
                                  "missing dataset, no network"])
def test_config_error_exits_2_with_one_line(case, workdir: Path):
    overrides, expected = CONFIG_ERRORS[case]
    before = snapshot(workdir)
    result = run_augrun("train", *SMOKE, *overrides, cwd=workdir)
    assert_user_error(result, expected)
    assert snapshot(workdir) == before
    assert not (workdir / "outputs").exists()  # stopped before Hydra made a run directory


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((32, 32), 50).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


BAD_FOLDERS = {
    "empty class folder": (lambda r: (r / "train" / "bird").mkdir() or (r / "test" / "bird").mkdir(), "is empty"),
    "non-image file": (lambda r: (r / "train" / "cat" / "notes.txt").write_text("not an image"), "notes.txt"),
    "truncated jpeg": (lambda r: (r / "train" / "dog" / "cut.jpg").write_bytes(jpeg_bytes()[:300]), "cut.jpg"),
    "classes differ": (lambda r: (r / "test" / "dog").rename(r / "test" / "wolf"), "classes differ"),
}


def broken_folder(workdir: Path, case: str) -> Path:
    root = workdir / "images"
    make_image_folder(root)
    BAD_FOLDERS[case][0](root)
    return root


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_image_folder_is_one_line_naming_the_path(case, in_workdir: Path):
    root = broken_folder(in_workdir, case)
    assert BAD_FOLDERS[case][1] in refusal(*SMOKE, "dataset=imagefolder", f"dataset.root={root}")


def test_bad_image_folder_exits_2(workdir: Path):
    root = broken_folder(workdir, "truncated jpeg")
    result = run_augrun("train", *SMOKE, "dataset=imagefolder", f"dataset.root={root}", cwd=workdir)
    assert_user_error(result, BAD_FOLDERS["truncated jpeg"][1])


def test_output_dir_that_cannot_be_created(workdir: Path):
    (workdir / "a_file").write_text("")
    result = run_augrun("train", *SMOKE, "hydra.run.dir=a_file/run", cwd=workdir)
    assert_user_error(result, "hydra.run.dir: cannot write under a_file")


def test_a_finished_run_is_never_overwritten(workdir: Path):
    run = workdir / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = snapshot(workdir)
    result = run_augrun("train", *SMOKE, "hydra.run.dir=run", cwd=workdir)
    assert_user_error(result, "hydra.run.dir: run already holds a run; valid: resume=true")
    assert snapshot(workdir) == before


def test_corrupt_checkpoint(workdir: Path):
    run = workdir / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    before = snapshot(workdir)
    result = run_augrun("train", *SMOKE, "hydra.run.dir=run", "resume=true", cwd=workdir)
    assert_user_error(result, "resume: run/checkpoint.pt is corrupt or unreadable")
    assert snapshot(workdir) == before


def test_unknown_command(workdir: Path):
    result = run_augrun("trian", cwd=workdir)
    assert_user_error(result, "unknown command 'trian'; valid: train, preview, compare")


@pytest.mark.parametrize("kind", [UserError, ConfigError, DataError, CheckpointError, RunDirError, CompareError])
def test_a_user_error_crosses_a_process_boundary_as_itself(kind):
    error = pickle.loads(pickle.dumps(kind("dataset.root", "missing; valid: a folder")))
    assert type(error) is kind and (error.key, error.message) == ("dataset.root", "missing; valid: a folder")
    assert str(error) == "dataset.root: missing; valid: a folder"


@pytest.mark.parametrize("override, expected", [
    ("logger.mlflow=yes-please", "logger.mlflow: Value 'yes-please' is not a valid bool (type str); valid: true or false"),
    ("trainer.epochs=abc", "; valid: an integer"),
    ("trainer.epochs=null", "trainer.epochs: field 'trainer.epochs' is not Optional; valid: an integer, not null"),
    ("optim.lr=fast", "; valid: a number"),
    ("trainer.threads=x", "; valid: an integer or null"),
    ("dataset.root=[a,b]", "dataset.root: Cannot convert 'list' to string: '['a', 'b']'; valid: a string"),
])
def test_a_value_of_the_wrong_type_names_the_type_the_key_takes(override: str, expected: str, in_workdir):
    message = refusal(*SMOKE, override)
    assert message.endswith(expected) if expected.startswith(";") else message == expected, message


@pytest.mark.parametrize("override", ["trainer.ema.warmup=5", "trainer.sync_bn=0", "logger.mlflow=1"])
def test_a_number_for_a_true_or_false_key_is_refused_not_read_as_true(override: str, in_workdir):
    key, _, value = override.partition("=")
    assert refusal(*SMOKE, override) == f"{key}: got {value}; valid: true or false"
    assert refusal("-m", *SMOKE, f"{key}=false,{value}") == f"{key}: got {value}; valid: true or false"  # in a sweep
