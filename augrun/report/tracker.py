"""The one interface of the trackers a run logs to beside its own files (augrun.report.trackers: TensorBoard;
augrun.report.mlflow_tracking: MLflow), so that RunOutputs tells them all the same events."""
from __future__ import annotations

from typing import Any


class Tracker:
    """What RunOutputs tells every tracker: the run starts (or resumes, with what its checkpoint kept of the tracker),
    an epoch ends, the run ends ("completed", "stopped", "failed"); and what the checkpoint keeps of it."""

    def start(self, tracking: dict[str, Any] | None, records: list[dict[str, Any]]) -> None:
        pass

    def log_epoch(self, record: dict[str, Any]) -> None:
        pass

    def end(self, status: str, error: str | None = None) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {}
