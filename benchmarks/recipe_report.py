#!/usr/bin/env python
"""Epoch by epoch, how a training run reached its accuracy and when: for recording experiment=fast in RESULTS.md.

    python benchmarks/recipe_report.py RUN_DIR [--target 0.94] [--wall-seconds S]

Reads RUN_DIR/metrics.jsonl and summary.json (what `augrun train` writes) and prints each epoch's loss, accuracies,
training seconds and cumulative seconds, then the first epoch that reached the target (plain and with flip
test-time augmentation, when logged) and the final numbers. `--wall-seconds` is the whole command's time measured
outside (start-up, data decoding and compilation included), printed beside augrun's own total.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def number(value: float | None, width: int) -> str:
    """An accuracy, or "-" for an epoch that was not evaluated (trainer.eval_every)."""
    return f"{value:{width}.4f}" if value is not None else "-".rjust(width)


def first_reaching(records: list[dict], key: str, target: float) -> dict | None:
    return next((r for r in records if r.get(key) is not None and r[key] >= target), None)


def best(records: list[dict], key: str) -> float | None:
    return max((r[key] for r in records if r.get(key) is not None), default=None)


def report(run_dir: Path, target: float, wall_seconds: float | None) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        print(f"{metrics}: missing (the run logged no epoch)")
        return 1
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    has_tta = any("test_acc_tta" in r for r in records)
    print(f"epoch  train_loss  train_acc  test_acc{'  test_acc_tta' if has_tta else ''}  seconds  cumulative_s")
    cumulative = 0.0
    for r in records:
        cumulative += r["seconds"]
        r["cumulative_seconds"] = cumulative
        tta = f"  {number(r.get('test_acc_tta'), 12)}" if has_tta else ""
        print(f"{r['epoch']:5d}  {r['train_loss']:10.4f}  {r['train_acc']:9.4f}  {number(r['test_acc'], 8)}{tta}  "
              f"{r['seconds']:7.2f}  {cumulative:12.1f}")
    for key in ("test_acc", "test_acc_tta") if has_tta else ("test_acc",):
        hit = first_reaching(records, key, target)
        print(f"{key} >= {target}: " + (f"first at epoch {hit['epoch']}, after {hit['cumulative_seconds']:.1f} s of training"
                                        if hit else f"not reached (best {number(best(records, key), 0)})"))
    last = records[-1]
    print(f"final (epoch {last['epoch']} of {summary.get('epochs', '?')}): test_acc {number(last['test_acc'], 0)}"
          + (f", test_acc_tta {number(last.get('test_acc_tta'), 0)}" if has_tta else "")
          + f"; status {summary.get('status', 'unknown (no summary.json)')}; devices {summary.get('devices')}")
    total = summary.get("total_seconds")
    print(f"time: training {cumulative:.1f} s, training + evaluation {total:.1f} s" if total is not None
          else f"time: training {cumulative:.1f} s", end="")
    print(f", whole command {wall_seconds:.0f} s" if wall_seconds is not None else "")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--target", type=float, default=0.94, help="test accuracy to reach (default 0.94)")
    parser.add_argument("--wall-seconds", type=float, default=None, help="the whole command's time, measured outside")
    args = parser.parse_args(argv)
    return report(args.run_dir, args.target, args.wall_seconds)


if __name__ == "__main__":
    sys.exit(main())
