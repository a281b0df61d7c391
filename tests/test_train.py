"""`augrun train` end to end on the CPU: files, contents, console lines, determinism."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers import METRIC_KEYS, SMOKE, read_metrics, run_augrun, without_timing
from PIL import Image

from augrun.cli import main

TRAIN_SIZE = 320  # experiment=smoke


def train_in_process(run_dir: Path, *overrides: str) -> list[dict]:
    """The real CLI and Hydra, in this process: saves the seconds a fresh interpreter spends importing torch."""
    main(["train", *SMOKE, f"hydra.run.dir={run_dir}", *overrides])
    return read_metrics(run_dir)


def test_smoke_run_writes_every_output(workdir: Path):
    result = run_augrun("train", *SMOKE, "trainer.epochs=2", cwd=workdir)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (workdir / "outputs").glob("*/*")  # outputs/<date>/<time>

    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert set(r) == METRIC_KEYS
        assert r["train_loss"] > 0 and 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1 and r["lr"] == 1e-3
        assert r["examples_per_s"] * r["seconds"] == pytest.approx(TRAIN_SIZE)  # every image once per epoch

    with open(run_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [{k: float(v) for k, v in row.items()} for row in rows] == [{k: float(v) for k, v in r.items()} for r in records]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["devices"] == ["cpu"] and summary["epochs"] == 2
    assert summary["final"] == {k: records[-1][k] for k in ("train_loss", "train_acc", "test_acc")}
    assert summary["best_test_acc"] == max(r["test_acc"] for r in records) and summary["total_seconds"] > 0

    assert (run_dir / ".hydra" / "config.yaml").is_file() and "experiment=smoke" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert Image.open(run_dir / "curves.png").size[0] > 200
    assert Image.open(run_dir / "preview.png").size == (600, 300)  # the book's 2x4 grid of the train pipeline
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == 3 and checkpoint["next_step"] == 0 and len(checkpoint["records"]) == 2

    last = records[-1]  # the book's closing lines, from the logged numbers
    assert f"loss {last['train_loss']:.3f}, train acc {last['train_acc']:.3f}, test acc {last['test_acc']:.3f}" in result.stdout
    assert "examples/sec on ['cpu']" in result.stdout
    assert "train_loss" in result.stdout and "Traceback" not in result.stderr


def test_same_seed_same_metrics_different_seed_different(workdir: Path):
    # worker count must not matter; the thread count (which trainer.threads=null derives from it) changes float
    # rounding, so it is pinned
    first = train_in_process(workdir / "a", "seed=3", "trainer.threads=1")
    again = train_in_process(workdir / "b", "seed=3", "trainer.workers=0", "trainer.threads=1")
    other = train_in_process(workdir / "c", "seed=4", "trainer.threads=1")
    assert without_timing(first) == without_timing(again)
    assert without_timing(first) != without_timing(other)


def test_a_compiled_run_learns_as_the_eager_one_and_saves_plain_weights(workdir: Path):
    # trainer.compile=true, experiment=fast's default, through augrun train: torch.compile's inductor on the CPU
    compiled = run_augrun("train", *SMOKE, "trainer.compile=true", "trainer.epochs=2", "trainer.threads=1",
                          "hydra.run.dir=compiled", cwd=workdir)
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    eager = train_in_process(workdir / "eager", "trainer.epochs=2", "trainer.threads=1")
    for got, expected in zip(read_metrics(workdir / "compiled"), eager, strict=True):
        assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-4)  # fused kernels round otherwise
        assert got["train_acc"] == pytest.approx(expected["train_acc"], abs=2 / TRAIN_SIZE)
        assert got["test_acc"] == pytest.approx(expected["test_acc"], abs=2 / 128)
    # the weights of the model itself, not of torch.compile's wrapper: a run resumes compiled or not
    weights = torch.load(workdir / "compiled" / "checkpoint.pt", weights_only=True)["model"]
    assert list(weights) == list(torch.load(workdir / "eager" / "checkpoint.pt", weights_only=True)["model"])


def test_learns_the_synthetic_task(workdir: Path):
    records = train_in_process(workdir / "run", "trainer.epochs=4", "aug=none", "trainer.workers=0",
                               "dataset.train_size=640", "optim.lr=0.01")
    # 10 balanced classes: chance is 0.1
    assert records[-1]["test_acc"] > 0.5 and records[-1]["train_loss"] < records[0]["train_loss"]


def test_summed_loss_is_logged_per_image_like_the_book(workdir: Path):
    # The book backpropagates l.sum() but logs the per-image mean; Adam is invariant to the loss's scale (up to eps),
    # so both reductions train alike and must log alike.
    mean = train_in_process(workdir / "mean", "trainer.workers=0")
    summed = train_in_process(workdir / "sum", "trainer.workers=0", "trainer.loss_reduction=sum")
    assert summed[0]["train_loss"] == pytest.approx(mean[0]["train_loss"], abs=1e-3)


def test_help_and_cfg_job_work_as_in_any_hydra_app(workdir: Path):
    usage = run_augrun("--help", cwd=workdir)
    assert usage.returncode == 0 and all(f"\n  {c} " in usage.stdout for c in ("train", "preview", "compare"))
    config = run_augrun("train", "--cfg", "job", *SMOKE, cwd=workdir)
    assert config.returncode == 0 and "name: synthetic" in config.stdout and "name: small_cnn" in config.stdout
    groups = run_augrun("train", "--help", cwd=workdir)
    assert groups.returncode == 0 and "aug: augmix, autoaugment, brightness" in groups.stdout
    assert not (workdir / "outputs").exists()  # printing runs nothing


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("overrides", [
    ["aug=flip_color_crop"],  # auto -> gpu backend, bf16, channels_last, the side stream
    ["aug.backend=cpu", "trainer.strategy=dp", "trainer.precision=fp32", "trainer.channels_last=false"],  # the book's path
], ids=["gpu-backend", "book-path"])
def test_trains_on_cuda(workdir: Path, overrides: list[str]):
    result = run_augrun("train", *SMOKE, "trainer.devices=cuda", "trainer.epochs=3", "dataset.train_size=640",
                        "optim.lr=0.01", "hydra.run.dir=run", *overrides, cwd=workdir)
    assert result.returncode == 0, result.stderr
    records = read_metrics(workdir / "run")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(r["examples_per_s"] * r["seconds"] == pytest.approx(640) for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert json.loads((workdir / "run" / "summary.json").read_text())["devices"] == ["cuda:0"]
