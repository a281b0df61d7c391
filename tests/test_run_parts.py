"""The pieces a training process is made of, each tested without starting a process: the built run, the checkpointer,
the outputs fed one epoch at a time, and the stop agreement."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from augrun import rundir
from augrun.augment.ops import parse_batch_pipeline, parse_train_pipeline
from augrun.data.datasets import load_dataset
from augrun.report.run_outputs import NoOutputs, RunOutputs
from augrun.run import distributed
from augrun.run.build import build_run
from augrun.run.checkpoint import load
from augrun.run.progress import Checkpointer, Progress
from augrun.run.trainer import comparable_config

CPU = torch.device("cpu")


@pytest.fixture
def built(smoke_config):
    d = smoke_config.dataset
    data = load_dataset(d.name, d.root, download=d.download, image_size=d.image_size, channels=d.channels,
                        num_classes=d.num_classes, train_size=d.train_size, test_size=d.test_size)
    placement = distributed.Placement("cpu", (), 1, "single")
    return build_run(smoke_config, data, backend="cpu", train_ops=parse_train_pipeline(smoke_config.aug.train),
                     batch_ops=parse_batch_pipeline(smoke_config.aug.batch), placement=placement, rank=0, world=1,
                     device=CPU)


def test_a_built_run_has_the_configured_parts(built, smoke_config):
    assert built.steps == -(-smoke_config.dataset.train_size // smoke_config.trainer.batch_size)
    assert built.trained is built.wrapped is built.model  # one process, no compile: nothing wraps the model
    assert built.amp_dtype is None and built.scheduler is None  # fp32 on the CPU; the book's constant lr
    images, labels = next(iter(built.train_batches.epoch(1)))
    assert images.shape == (smoke_config.trainer.batch_size, 3, 32, 32) and labels.dtype == torch.int64


def test_the_same_seed_builds_the_same_initial_weights(smoke_config, built):
    first = {k: v.clone() for k, v in built.model.state_dict().items()}
    d = smoke_config.dataset
    data = load_dataset(d.name, d.root, download=d.download, image_size=d.image_size, channels=d.channels,
                        num_classes=d.num_classes, train_size=d.train_size, test_size=d.test_size)
    again = build_run(smoke_config, data, backend="cpu", train_ops=[], batch_ops=[],
                      placement=distributed.Placement("cpu", (), 1, "single"), rank=0, world=1, device=CPU)
    assert all(torch.equal(first[k], v) for k, v in again.model.state_dict().items())


def test_the_checkpointer_restores_what_it_saved(tmp_path: Path, built, smoke_config):
    path = tmp_path / rundir.CHECKPOINT
    checkpointer = Checkpointer(path, built, config=comparable_config(smoke_config), is_main=True)
    loss = built.model(torch.rand(2, 3, 32, 32)).sum()
    loss.backward()
    built.optimizer.step()  # optimizer state worth saving
    progress = Progress.fresh(CPU)
    progress.state.sums += torch.tensor([3.5, 2.0, 4.0], dtype=torch.float64)
    progress.state.next_step, progress.state.seconds, progress.total_seconds = 3, 1.25, 7.5
    progress.records.append({"epoch": 0, "train_loss": 1.0})
    checkpointer.save(progress)
    weights = {k: v.clone() for k, v in built.model.state_dict().items()}

    with torch.no_grad():
        for parameter in built.model.parameters():
            parameter.zero_()
    restored = checkpointer.restore(load(path), CPU)  # load: the weights_only reader a resume uses
    assert all(torch.equal(weights[k], v) for k, v in built.model.state_dict().items())
    assert (restored.epoch, restored.state.next_step, restored.state.seconds) == (1, 3, 1.25)
    assert torch.equal(restored.state.sums, progress.state.sums) and restored.records == progress.records
    assert restored.total_seconds == 7.5 and built.optimizer.state_dict()["state"]


def test_a_rank_other_than_0_writes_no_checkpoint(tmp_path: Path, built, smoke_config):
    Checkpointer(tmp_path / rundir.CHECKPOINT, built, config={}, is_main=False).save(Progress.fresh(CPU))
    assert not (tmp_path / rundir.CHECKPOINT).exists()


RECORDS = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.3 * e, "test_acc": 0.25 * e, "lr": 1e-3, "seconds": 1.0,
            "examples_per_s": 100.0} for e in (1, 2)]


def test_outputs_fed_epoch_by_epoch_write_every_file(tmp_path: Path, capsys):
    outputs = RunOutputs(tmp_path, epochs=2, devices=["cpu"])
    for count in (1, 2):
        outputs.epoch_finished(RECORDS[:count])
    outputs.completed(RECORDS, total_seconds=2.5)
    assert [json.loads(line) for line in (tmp_path / rundir.METRICS).read_text().splitlines()] == RECORDS
    assert (tmp_path / rundir.METRICS_CSV).read_text().count("\n") == 3 and (tmp_path / rundir.CURVES).is_file()
    summary = json.loads((tmp_path / rundir.SUMMARY).read_text())
    assert summary["status"] == "completed" and summary["final"]["test_acc"] == 0.5 and summary["examples_per_s"] == 100
    assert "loss 1.000, train acc 0.600, test acc 0.500" in capsys.readouterr().out


def test_a_stop_is_written_as_stopped_with_the_resume_command(tmp_path: Path, capsys):
    RunOutputs(tmp_path, epochs=2, devices=["cpu"]).stopped(15, "at epoch 2, step 1", RECORDS[:1], 1.0)
    assert json.loads((tmp_path / rundir.SUMMARY).read_text())["status"] == "stopped"
    assert f"hydra.run.dir={tmp_path} resume=true" in capsys.readouterr().out


def test_no_outputs_take_every_call_and_write_nothing(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outputs = NoOutputs()
    outputs.resumed(RECORDS, 2, 0)
    outputs.epoch_started(1, 5, 0)
    outputs.step_progress(1, 1.0, 0.5, 10.0)
    outputs.epoch_finished(RECORDS)
    outputs.stopped(2, "here", RECORDS, 1.0)
    outputs.completed(RECORDS, 1.0)
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr() == ("", "")


def test_one_process_stops_at_the_next_step_and_several_agree_every_n_steps():
    signaled = [False]
    alone = distributed.StopAgreement(lambda: signaled[0], world=1, device=CPU, every=3)
    assert not alone.after_step()
    signaled[0] = True
    assert alone.after_step() and alone.now()
    # with several ranks (no group here: the agreement is the flag), only every 3rd step asks the others
    several = distributed.StopAgreement(lambda: True, world=2, device=CPU, every=3)
    assert [several.after_step() for _ in range(6)] == [False, False, True, False, False, True]
