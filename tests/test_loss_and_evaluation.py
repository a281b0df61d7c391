"""What a run optimises and how it is scored: label smoothing reaches the loss; flip test-time augmentation and
trainer.eval_every reach the evaluation and the logs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_train, read_metrics

from augrun.cli import main
from augrun.config.compose import to_train_config
from augrun.errors import ConfigError

# --- label smoothing ----------------------------------------------------------------------------------------------

def test_label_smoothing_composes_and_is_range_checked():
    assert to_train_config(compose_train("trainer.label_smoothing=0.1")).trainer.label_smoothing == 0.1
    assert to_train_config(compose_train()).trainer.label_smoothing == 0.0  # the book: off
    with pytest.raises(ConfigError, match="trainer.label_smoothing"):
        to_train_config(compose_train("trainer.label_smoothing=1.0"))


def test_label_smoothing_reaches_the_loss(tmp_path: Path, monkeypatch):
    built = []

    class RecordingLoss(torch.nn.CrossEntropyLoss):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", RecordingLoss)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra replaces sys.argv
    run_dir = tmp_path / "run"
    main(["train", "experiment=smoke", f"hydra.run.dir={run_dir}", "trainer.label_smoothing=0.1", "aug=none",
          "trainer.workers=0", "dataset.train_size=64", "dataset.test_size=32", "trainer.batch_size=32"])
    assert [loss.label_smoothing for loss in built] == [0.1]
    assert len(read_metrics(run_dir)) == 1


# --- flip test-time augmentation -------------------------------------------------------------------------------------

class LeftHeavy(torch.nn.Module):
    """Two classes on 1x2 images [a, b]: logits (2a, b). Mirroring swaps a and b, so plain and flip-tta predictions
    differ in a way that can be worked out by hand."""

    def forward(self, images):
        a, b = images[:, 0, 0, 0], images[:, 0, 0, 1]
        return torch.stack([2 * a, b], dim=1)


def test_flip_tta_scores_the_sum_of_logits_of_image_and_mirror():
    from augrun.run.engine import evaluate
    pixels = [[0.1, 0.5], [0.5, 0.1], [0.3, 0.9], [0.2, 0.3], [0.1, 0.4]]
    labels = torch.tensor([1, 0, 0, 0, 0])
    # plain logits (2a, b): argmax 1, 0, 1, 0, 1 -> right on images 0, 1, 3
    # tta logits (2a + 2b, b + a): class 0 for all five -> right on images 1, 2, 3, 4
    images = torch.tensor(pixels).view(5, 1, 1, 2)
    batches = [(images[:3], labels[:3]), (images[3:], labels[3:])]
    device = torch.device("cpu")
    assert evaluate(LeftHeavy(), batches, amp_dtype=None, device=device) == {"test_acc": 3 / 5}
    assert evaluate(LeftHeavy(), batches, amp_dtype=None, device=device, flip_tta=True) == \
        {"test_acc": 3 / 5, "test_acc_tta": 4 / 5}


def test_flip_tta_and_eval_every_are_logged(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # run_hydra replaces sys.argv
    run_dir = tmp_path / "run"
    main(["train", "experiment=smoke", f"hydra.run.dir={run_dir}", "trainer.tta=flip", "trainer.eval_every=2",
          "trainer.epochs=3", "trainer.workers=0", "dataset.train_size=64", "dataset.test_size=32",
          "trainer.batch_size=32"])
    records = read_metrics(run_dir)
    # evaluated after epoch 2 (every 2nd) and epoch 3 (the last); epoch 1 logs null test metrics
    assert [(r["test_acc"] is None, r["test_acc_tta"] is None) for r in records] == [(True, True), (False, False),
                                                                                     (False, False)]
    assert all(0 <= r["test_acc_tta"] <= 1 for r in records[1:])
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[header.index("test_acc") + 1] == "test_acc_tta"
    assert rows[1].split(",")[header.index("test_acc")] == ""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["test_acc_tta"] == records[-1]["test_acc_tta"]
    assert summary["best_test_acc"] == max(records[1]["test_acc"], records[2]["test_acc"])
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    header = next(line for line in lines if line[:1] == ["epoch"])
    first_row = next(line for line in lines if line[:1] == ["1"])
    # the console's epoch-1 row has no test numbers
    assert first_row[header.index("test_acc")] == first_row[header.index("test_acc_tta")] == "-"
    with pytest.raises(ConfigError, match="trainer.tta: got 'mirror'; valid: none, flip"):
        to_train_config(compose_train("trainer.tta=mirror"))
    with pytest.raises(ConfigError, match="trainer.eval_every: got 0; must be >= 1"):
        to_train_config(compose_train("trainer.eval_every=0"))
    book = to_train_config(compose_train()).trainer
    assert (book.tta, book.eval_every) == ("none", 1)  # the book: no tta, a test accuracy every epoch
