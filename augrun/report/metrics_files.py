"""The metrics files of a run directory: metrics.jsonl (one record per epoch, appended, so a resumed run continues
it), metrics.csv (its mirror) and summary.json. Their fields are the contract that `augrun compare` and the API read."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from augrun import rundir
from augrun.files import write_text_atomic

METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "test_acc", "lr", "seconds", "examples_per_s"]
# the numbers of a run's last epoch that summary.json keeps as its final ones
FINAL_NUMBERS = ("train_loss", "train_acc", "test_acc", "test_acc_tta", "test_acc_ema")
# logged only when enabled (trainer.tta, trainer.ema), in this order after test_acc
OPTIONAL_FIELDS = ["test_acc_tta", "test_acc_ema"]


def metric_fields(record: dict[str, Any]) -> list[str]:
    """The fields of a metrics record, in file and table order."""
    at = METRIC_FIELDS.index("test_acc") + 1
    return METRIC_FIELDS[:at] + [name for name in OPTIONAL_FIELDS if name in record] + METRIC_FIELDS[at:]


class MetricsFiles:
    """metrics.jsonl gets one line per epoch (appended, so a resumed run continues it); metrics.csv mirrors it."""

    def __init__(self, run_dir: Path):
        self.jsonl = run_dir / rundir.METRICS
        self.csv = run_dir / rundir.METRICS_CSV
        self.summary = run_dir / rundir.SUMMARY

    def read(self) -> list[dict[str, Any]]:
        if not self.jsonl.is_file():
            return []
        return [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Rewrite both files from records (a resume drops epochs logged after the checkpoint it continues from)."""
        write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in records))
        self._write_csv(records)

    def append(self, record: dict[str, Any], previous: list[dict[str, Any]]) -> None:
        with open(self.jsonl, "a") as file:
            file.write(json.dumps(record) + "\n")
        self._write_csv(previous + [record])

    def _write_csv(self, records: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=metric_fields(records[0] if records else {}), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        write_text_atomic(self.csv, buffer.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary, json.dumps(summary, indent=2) + "\n")
