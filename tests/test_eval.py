"""`augrun eval`: a finished run's and a stopped run's weights scored on the test split (or another dataset), written
to eval.json beside the run's files and nothing else; bad input is one line and exit status 2, with nothing written.

Real runs and real files: the runs are trained by `augrun train experiment=smoke`, in this process where the test
allows it (seconds), and stopped by a real signal in a process of its own."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import MARKER_LINE, SMOKE, assert_user_error, make_image_folder, read_metrics, run_augrun, snapshot

from augrun.cli import main
from augrun.commands.eval import eval_config
from augrun.run import checkpoint

RUN = [*SMOKE, "trainer.workers=0", "hydra.run.dir=run"]
NORMALISED = ["dataset.normalize=true", "dataset.mean=[0.4,0.5,0.6]"]


def train_in(folder: Path, *overrides: str) -> Path:
    """A finished smoke run at folder/run, trained by the real command in this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        main(["train", *RUN, "trainer.epochs=1", *overrides])
    return folder / "run"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished run for the module's tests, each of which evaluates its own copy. Its images are normalised with
    statistics of its own, which an evaluation must apply as training did."""
    return train_in(tmp_path_factory.mktemp("finished"), *NORMALISED)


@pytest.fixture
def run(finished: Path, in_workdir: Path) -> Path:
    """A copy of the finished run as `run` in the current directory, named as a user would: relative."""
    shutil.copytree(finished, in_workdir / "run")
    return Path("run")


def evaluate(*args: str, capsys) -> tuple[dict, str]:
    main(["eval", *args])
    out = capsys.readouterr().out
    return json.loads((Path(args[0]) / "eval.json").read_text()), out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("augrun: warning: ")]
    assert len(errors) == 1 and errors[0].startswith("augrun: error: ") and "Traceback" not in err, err
    return errors[0]


def assert_only_eval_json_added(before: dict, after: dict) -> None:
    assert set(after) - set(before) == {"eval.json"} and {name: after[name] for name in before} == before


def test_eval_scores_the_final_weights_as_the_run_did_and_adds_only_eval_json(run: Path, capsys):
    before = snapshot(run)
    report, out = evaluate("run", capsys=capsys)
    assert_only_eval_json_added(before, snapshot(run))
    last = read_metrics(run)[-1]
    assert report["test_acc"] == pytest.approx(last["test_acc"], abs=1e-6)  # the same weights on the same images
    assert "test_acc_tta" not in report
    assert report["weights"] == "model" and report["overrides"] == []
    assert report["dataset"] == {"name": "synthetic", "root": "data/", "split": "test", "images": 128}
    assert report["checkpoint"] == {"epoch": 2, "next_step": 0}  # epoch 1 finished, none begun
    assert report["environment"]["devices"][0].startswith("cpu") and report["seconds"] > 0
    assert out == f"test acc {last['test_acc']:.3f} (weights=model, epoch 1) -> run/eval.json\n"


def test_flip_tta_adds_test_acc_tta_and_the_overrides_are_recorded(run: Path, capsys):
    plain = read_metrics(run)[-1]["test_acc"]
    report, out = evaluate("run", "trainer.tta=flip", "trainer.batch_size=50", capsys=capsys)
    assert report["test_acc"] == pytest.approx(plain, abs=1e-6)  # another batch size scores the same images
    assert 0.0 <= report["test_acc_tta"] <= 1.0
    assert report["overrides"] == ["trainer.tta=flip", "trainer.batch_size=50"]
    assert f", with flip tta {report['test_acc_tta']:.3f} (weights=model, epoch 1)" in out
    report, _ = evaluate("run", "dataset.test_size=64", capsys=capsys)  # a second evaluation replaces the first
    assert report["dataset"]["images"] == 64 and "test_acc_tta" not in report


def test_both_weights_of_a_gpu_backend_run_with_ema_score_as_in_its_training(in_workdir: Path, capsys):
    # the batched backend's data path (on the CPU here), and the weights' moving average beside them
    run = train_in(in_workdir, "aug.backend=gpu", "trainer.ema.decay=0.5", *NORMALISED)
    last = read_metrics(run)[-1]
    report, _ = evaluate("run", capsys=capsys)
    assert report["test_acc"] == pytest.approx(last["test_acc"], abs=1e-6)
    report, out = evaluate("run", "weights=ema", capsys=capsys)
    assert report["weights"] == "ema" and "(weights=ema, epoch 1)" in out
    assert report["test_acc"] == pytest.approx(last["test_acc_ema"], abs=1e-6)


def test_another_dataset_config_replaces_the_runs_but_for_the_form_of_its_images(run: Path):
    own = eval_config(run, ["dataset.test_size=64"]).dataset
    assert (own.name, own.train_size, own.test_size, own.normalize) == ("synthetic", 320, 64, True)
    other = eval_config(run, ["dataset=imagefolder", "dataset.root=photos"]).dataset
    assert (other.name, other.root, other.train_size, other.test_size) == ("imagefolder", "photos", None, None)
    assert (other.normalize, other.mean, other.image_size, other.channels) == (True, [0.4, 0.5, 0.6], 32, 3)


def test_another_dataset_config_is_scored_with_the_runs_model(run: Path, capsys):
    make_image_folder(Path("photos"), classes=tuple(f"class_{i}" for i in range(10)), per_class=1)
    report, _ = evaluate("run", "dataset=imagefolder", "dataset.root=photos", capsys=capsys)
    assert report["dataset"] == {"name": "imagefolder", "root": "photos", "split": "test", "images": 10}
    shutil.rmtree("photos/train")  # another test set to score needs no train/: `photos/test/<class>/` alone will do
    again, _ = evaluate("run", "dataset=imagefolder", "dataset.root=photos", capsys=capsys)
    assert again["dataset"] == report["dataset"] and again["test_acc"] == report["test_acc"]
    make_image_folder(Path("two"))  # 2 classes: the run's model has 10 outputs
    with pytest.raises(SystemExit) as caught:
        main(["eval", "run", "dataset=imagefolder", "dataset.root=two"])
    assert caught.value.code == 2
    assert "do not fit small_cnn for imagefolder's 2 classes" in one_error_line(capsys)


@pytest.fixture
def not_runs(run: Path) -> None:
    """Beside `run`: a file, a folder that is no run, a sweep's root, runs without a checkpoint or with a broken one."""
    Path("afile").write_text("not a run\n")
    Path("empty").mkdir()
    shutil.copytree(run, "sweep/0")
    Path("sweep/multirun.yaml").write_text("{}\n")  # as Hydra marks a sweep's root
    shutil.copytree(run, "unsaved")
    (Path("unsaved") / "checkpoint.pt").unlink()
    shutil.copytree(run, "broken")
    (Path("broken") / "checkpoint.pt").write_bytes(b"not a zip of tensors")
    shutil.copytree(run, "foreign")  # a checkpoint copied in from a run of another model
    state = torch.load(Path("foreign") / "checkpoint.pt", weights_only=False)
    state["config"]["model"]["width"] = 16
    torch.save(state, Path("foreign") / "checkpoint.pt")


# the arguments of `augrun eval`, and what its one line must say
BAD_INPUT = [
    ([], "RUN_DIR: not given; valid: augrun eval RUN_DIR"),
    (["missing"], "missing: no such directory; valid: a run directory that augrun train wrote"),
    (["afile"], "afile: is a file, not a run directory"),
    (["empty"], "empty: holds no .hydra/config.yaml, so no config to evaluate"),
    (["sweep"], "sweep: is a sweep's root, which holds one run per job; valid: name one job directory, "
                "e.g. augrun eval sweep/0"),
    (["unsaved"], "unsaved: holds no checkpoint.pt, so no weights to evaluate"),
    (["broken"], "broken/checkpoint.pt is corrupt or unreadable"),
    (["foreign"], "foreign/checkpoint.pt: was saved by another model than the one foreign/.hydra records "
                  "(checkpoint -> run: model.width (16 -> 8)); valid: the run directory the checkpoint was saved in"),
    (["weights=ema", "run"], "RUN_DIR: must come first, before weights=ema; valid: augrun eval RUN_DIR"),
    (["run", "weights=bogus"], "weights: weights=bogus names no weights of a run; valid: weights=model"),
    (["run", "weights=ema"], "weights: ema, but run/checkpoint.pt holds no EMA weights (the run had "
                             "trainer.ema.decay=0); valid: weights=model"),
    (["run", "model.width=16"], "model.width: the weights in checkpoint.pt belong to the run's model; valid: "),
    (["run", "model=resnet18"], "model: the weights in checkpoint.pt belong to the run's model"),
    (["run", "aug.backend=gpu"], "aug.backend: augments the training images only"),
    (["run", "optim.lr=0.1"], "optim.lr: not something an evaluation changes"),
    (["run", "dataset.normalize=true"], "dataset.normalize: the run's weights were trained on images of its size"),
    (["run", "trainer.tta=["], "trainer.tta=[: not a valid override"),
    (["run", "trainer.tta=both"], "trainer.tta: got 'both'; valid: none, flip"),
    (["run", "dataset=bogus"], "dataset=bogus: unknown option; valid: cifar10"),
    (["run", "dataset=imagefolder"], "dataset.root: required, and not set"),
    (["run", "--cfg", "job"], "--cfg: not an option of augrun eval"),
]


@pytest.mark.parametrize("args,expected", BAD_INPUT, ids=[" ".join(args) or "no arguments" for args, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_writes_nothing(args, expected, not_runs, in_workdir: Path, capsys):
    before = snapshot(in_workdir)
    with pytest.raises(SystemExit) as caught:
        main(["eval", *args])
    assert caught.value.code == 2
    assert expected in one_error_line(capsys)
    assert snapshot(in_workdir) == before


def test_the_command_line_exits_2_with_one_line_and_lists_eval(workdir: Path, capsys):
    assert_user_error(run_augrun("eval", "outputs/none", cwd=workdir), "outputs/none: no such directory")
    main(["--help"])
    assert "\n  eval " in capsys.readouterr().out
    main(["eval", "--help"])
    assert capsys.readouterr().out.startswith("usage: augrun eval RUN_DIR [weights=model|ema] [overrides]")


@pytest.mark.slow
def test_a_run_stopped_by_a_signal_is_evaluated_where_its_checkpoint_stands(in_workdir: Path, marker_hooks: Path,
                                                                            capsys):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(marker_hooks)}
    with open("train.err", "w") as err:
        train = subprocess.Popen([sys.executable, "-m", "augrun", "train", *RUN, "trainer.epochs=2"], env=env,
                                 stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        try:
            for line in train.stdout:  # signal at epoch 2, step 2 of 5 (helpers.STEP_MARKER)
                if MARKER_LINE in line:
                    os.killpg(train.pid, signal.SIGINT)
                    break
            train.communicate(timeout=120)
        finally:
            if train.poll() is None:  # a run that never reached the marker, or hangs: not left behind
                os.killpg(train.pid, signal.SIGKILL)
    assert train.returncode == 128 + signal.SIGINT, Path("train.err").read_text()
    state = checkpoint.load(Path("run/checkpoint.pt"))
    assert state["epoch"] == 2 and 0 < state["next_step"] < 5  # part-way through epoch 2
    before = snapshot(Path("run"))
    report, out = evaluate("run", capsys=capsys)
    assert report["checkpoint"] == {"epoch": 2, "next_step": state["next_step"]}
    assert f"(weights=model, epoch 2, step {state['next_step']}) -> run/eval.json" in out
    assert 0.0 <= report["test_acc"] <= 1.0 and len(read_metrics(Path("run"))) == 1  # no record of these weights
    assert_only_eval_json_added(before, snapshot(Path("run")))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc to see the handler")
def test_a_signal_stops_eval_in_one_line_and_writes_nothing(run: Path):
    from test_signals import Augrun, wait_for_augrun_handler
    before = snapshot(run)
    evaluating = Augrun(run.parent, "eval", str(run))
    wait_for_augrun_handler(evaluating)  # then torch's import takes seconds: the signal lands while eval works
    evaluating.process.send_signal(signal.SIGTERM)
    status, _, stderr = evaluating.finish()
    assert status == 143 and stderr == "augrun: eval stopped by signal 15\n"
    assert snapshot(run) == before
