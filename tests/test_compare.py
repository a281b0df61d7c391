"""Sweep comparison and the per-run curve plot, on run directories written here in the training code's format."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf
from PIL import Image
from rich.console import Console

from augrun.commands.compare import compare_command
from augrun.compare import (
    CSV_COLUMNS,
    CompareError,
    SweepReport,
    find_runs,
    load_run,
    print_report,
    write_report,
)
from augrun.report.curves import plot_curves

REPO = Path(__file__).resolve().parents[1]


def epochs_for(final_test: float, n: int = 3, gap: float = 0.1) -> list[dict]:
    """n epoch rows rising to ``final_test``; train acc stays ``gap`` above test acc."""
    rows = []
    for e in range(1, n + 1):
        test = final_test - 0.05 * (n - e)
        rows.append({"epoch": e, "train_loss": 2.0 / e, "train_acc": test + gap, "test_acc": test,
                     "lr": 0.001, "seconds": 1.0, "examples_per_s": 1000.0 * e})  # fmt: skip
    return rows


def make_run(job: Path, overrides: list[str], rows: list[dict], status: str | None = "completed",
             error: str | None = None, planned: int | None = None) -> Path:  # fmt: skip
    """A run directory as the trainer writes it; status None leaves out summary.json (a job killed hard)."""
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status is not None:
        final = {k: rows[-1][k] for k in ("train_loss", "train_acc", "test_acc")} if rows else {}
        summary = {"status": status, "epochs": planned or len(rows), "final": final,
                   "best_test_acc": max((r["test_acc"] for r in rows), default=None),
                   "examples_per_s": 1234.5, "devices": ["cpu"], "total_seconds": 3.0, "error": error}  # fmt: skip
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def make_sweep(root: Path, accs: dict[str, list[float]], extra: tuple[str, ...] = ("experiment=smoke",)) -> Path:
    """A Hydra sweep root: jobs 0, 1, ... for each aug and seed, with the given final test accuracies."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for aug, finals in accs.items():
        for seed, acc in enumerate(finals):
            make_run(root / str(job), [*extra, f"aug={aug}", f"seed={seed}"], epochs_for(acc))
            job += 1
    return root


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["group"]: row for row in csv.DictReader(f)}


def final_values(run_dirs: list[Path]) -> dict[str, list[float]]:
    """Recomputed from the files, independently of augrun.compare."""
    out: dict[str, list[float]] = {"test": [], "best": [], "train": [], "gap": [], "loss": []}
    for d in run_dirs:
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        out["test"].append(rows[-1]["test_acc"])
        out["best"].append(max(r["test_acc"] for r in rows))
        out["train"].append(rows[-1]["train_acc"])
        out["gap"].append(rows[-1]["train_acc"] - rows[-1]["test_acc"])
        out["loss"].append(rows[-1]["train_loss"])
    return out


def report_for(root: Path, out: Path | None = None):
    return write_report([load_run(p) for p in find_runs([root])], out or root)


def test_groups_counts_and_stats_match_the_files(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.80, 0.82, 0.81], "flip_only": [0.85, 0.86, 0.90]})
    report = report_for(root)

    assert [g.label for g in report.groups] == ["aug=flip_only", "aug=none"]  # experiment=smoke is common: dropped
    assert [len(g.completed) for g in report.groups] == [3, 3]
    assert report.failed == []
    rows = read_csv(root / "comparison.csv")
    for label, jobs in {"aug=none": [0, 1, 2], "aug=flip_only": [3, 4, 5]}.items():
        values = final_values([root / str(j) for j in jobs])
        row = read_csv(root / "comparison.csv")[label]
        for column, key in [("test_acc", "test"), ("best_test_acc", "best"), ("train_acc", "train"),
                            ("gap", "gap"), ("loss", "loss")]:  # fmt: skip
            assert float(row[f"{column}_mean"]) == pytest.approx(statistics.mean(values[key]), rel=1e-5)
            assert float(row[f"{column}_std"] or 0) == pytest.approx(statistics.stdev(values[key]), abs=1e-6)
        assert row["n_seeds"] == "3" and row["n_failed"] == "0"
        assert float(row["examples_per_s_mean"]) == 1234.5
    assert float(rows["aug=flip_only"]["delta_vs_none"]) == pytest.approx(0.87 - 0.81, rel=1e-5)


def test_runs_sorted_numerically_and_seeds_read(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.5] * 12})
    runs = find_runs([root])
    assert [p.name for p in runs] == [str(i) for i in range(12)]  # 10 and 11 after 9, not after 1
    assert [load_run(p).seed for p in runs] == list(range(12))
    assert load_run(runs[0]).overrides == {"experiment": "smoke", "aug": "none"}


@pytest.mark.parametrize(
    ("flip", "within"),
    [
        # none: 0.80, 0.81, 0.82 (std 0.01); 2·SE = 2·sqrt(2·0.01²/3) = 0.01633
        ([0.905, 0.915, 0.925], False),  # diff 0.105: beyond noise
        ([0.805, 0.815, 0.825], True),  # diff 0.005: within noise
    ],
)
def test_delta_vs_none_and_noise_flag(tmp_path: Path, flip: list[float], within: bool) -> None:
    none = [0.80, 0.81, 0.82]
    root = make_sweep(tmp_path / "sweep", {"none": none, "flip_only": flip})
    report = report_for(root)
    flip_group = next(g for g in report.groups if g.label == "aug=flip_only")
    diff = statistics.mean(flip) - statistics.mean(none)
    se = math.sqrt(statistics.variance(flip) / 3 + statistics.variance(none) / 3)
    assert flip_group.delta_vs_none == pytest.approx(diff)
    assert flip_group.within_noise is within is (abs(diff) < 2 * se)
    assert read_csv(root / "comparison.csv")["aug=flip_only"]["within_noise"] == str(within).lower()
    assert read_csv(root / "comparison.csv")["aug=none"]["delta_vs_none"] == ""  # the baseline: not compared to itself
    notes = (root / "comparison.md").read_text().split("## Noise")[1]
    assert ("within noise" in notes) is within and ("beyond noise" in notes) is not within


def test_single_seed_has_no_noise_estimate(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.8], "flip_only": [0.9]})
    report = report_for(root)
    flip_group = next(g for g in report.groups if g.label == "aug=flip_only")
    assert flip_group.within_noise is None and flip_group.delta_vs_none == pytest.approx(0.1)
    md = (root / "comparison.md").read_text()
    assert "1 seed: no noise estimate" in md
    assert "| 0.900±- |" in md  # std shown as "-" with one seed
    row = read_csv(root / "comparison.csv")["aug=flip_only"]
    assert row["test_acc_std"] == "" and row["within_noise"] == ""


def test_baseline_matches_the_other_overrides(tmp_path: Path) -> None:
    # aug x optim: "aug=flip_only optim=sgd" is compared with "aug=none optim=sgd", not with "aug=none optim=adam".
    root = tmp_path / "sweep"
    accs = {("none", "adam"): 0.80, ("none", "sgd"): 0.70, ("flip_only", "adam"): 0.85, ("flip_only", "sgd"): 0.72}
    for job, ((aug, optim), acc) in enumerate(accs.items()):
        make_run(root / str(job), [f"aug={aug}", f"optim={optim}", "seed=0"], epochs_for(acc))
    groups = {g.label: g for g in report_for(root).groups}
    assert list(groups) == ["aug=flip_only optim=adam", "aug=flip_only optim=sgd", "aug=none optim=adam",
                            "aug=none optim=sgd"]  # fmt: skip
    assert groups["aug=flip_only optim=sgd"].delta_vs_none == pytest.approx(0.02)
    assert groups["aug=flip_only optim=adam"].baseline == "aug=none optim=adam"


def test_identical_overrides_give_label_all(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.8, 0.82]})
    report = report_for(root)
    assert [(g.label, len(g.completed)) for g in report.groups] == [("all", 2)]
    assert report.groups[0].delta_vs_none is None


def test_failed_jobs_are_listed_and_the_rest_reported(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.80, 0.82], "flip_only": [0.85, 0.87]})
    make_run(root / "4", ["experiment=smoke", "aug=flip_only", "seed=2"], epochs_for(0.5, n=1), status="failed",
             error="CUDA out of memory on cuda:0\nTraceback ...")  # fmt: skip
    make_run(root / "5", ["experiment=smoke", "aug=none", "seed=2"], epochs_for(0.5, n=2), status=None)
    make_run(root / "6", ["experiment=smoke", "aug=none", "seed=3"], epochs_for(0.5, n=2), status="interrupted",
             planned=3)  # fmt: skip
    report = report_for(root)

    assert sorted(r.path.name for r in report.failed) == ["4", "5", "6"]
    assert {r.path.name: r.error for r in report.failed} == {
        "4": "CUDA out of memory on cuda:0",  # first line only
        "5": "no summary.json",
        "6": "interrupted after 2 of 3 epochs",  # partial metrics and not completed: failed
    }
    rows = read_csv(root / "comparison.csv")
    assert (rows["aug=none"]["n_seeds"], rows["aug=none"]["n_failed"]) == ("2", "2")
    assert (rows["aug=flip_only"]["n_seeds"], rows["aug=flip_only"]["n_failed"]) == ("2", "1")
    # Failed runs do not enter the means.
    assert float(rows["aug=none"]["test_acc_mean"]) == pytest.approx(0.81)
    md = (root / "comparison.md").read_text()
    failed_section = md.split("## Failed jobs")[1].split("## Noise")[0]
    assert f"aug=flip_only seed 2 (failed): CUDA out of memory on cuda:0 [{root / '4'}]" in failed_section
    assert "aug=none seed 2 (failed): no summary.json" in failed_section
    assert "aug=none seed 3 (interrupted): interrupted after 2 of 3 epochs" in failed_section


def test_completed_run_with_a_torn_last_line_counts(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", ["aug=none", "seed=0"], epochs_for(0.8))
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 4, "train_lo')  # killed mid-write after summary.json: earlier rows still count
    result = load_run(run)
    assert result.ok and len(result.epochs) == 3 and result.values["test_acc"] == pytest.approx(0.8)


def test_csv_and_markdown_content_and_determinism(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.8, 0.81], "flip_only": [1 / 3, 0.4]})
    report_for(root)
    text = (root / "comparison.csv").read_text()
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert len(text.splitlines()) == 3
    assert read_csv(root / "comparison.csv")["aug=flip_only"]["test_acc_mean"] == "0.366667"  # 6 significant digits
    md = (root / "comparison.md").read_text()
    assert "| aug=flip_only | 2 | 0 |" in md and "| aug=none | 2 | 0 |" in md and "baseline" in md
    assert "## Failed jobs\n\nnone" in md

    first = {name: (root / name).read_bytes() for name in ("comparison.md", "comparison.csv", "comparison.png")}
    report_for(root)
    assert {name: (root / name).read_bytes() for name in first} == first
    assert not list(root.glob(".*.tmp"))  # atomic writes leave no temp files


def test_png_has_plausible_size(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.8, 0.82, 0.81], "flip_only": [0.9]})
    out = tmp_path / "elsewhere"
    report = report_for(root, out)
    assert report.files == [out / "comparison.md", out / "comparison.csv", out / "comparison.png"]
    with Image.open(out / "comparison.png") as img:
        assert img.format == "PNG"
        assert 800 <= img.width <= 2000 and 300 <= img.height <= 1000
        assert img.width > img.height  # two panels side by side


def test_print_report_shows_the_table(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.8, 0.82], "flip_only": [0.85, 0.9]})
    make_run(root / "4", ["experiment=smoke", "aug=none", "seed=9"], [], status="failed", error="bad [red] text")
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_report(report_for(root), console)
    out = console.file.getvalue()
    assert "aug=flip_only" in out and "aug=none" in out and "0.875±0.035" in out
    assert "bad [red] text" in out  # brackets in an error are text, not rich markup


def test_run_directories_given_directly(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", ["aug=none", "seed=0"], epochs_for(0.8))
    b = make_run(tmp_path / "b", ["aug=flip_only", "seed=0"], epochs_for(0.9))
    assert find_runs([a, b]) == [a, b]
    assert [g.label for g in report_for(a, tmp_path / "out").groups] == ["all"]


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None], ids=["empty", "missing"])
def test_compare_error_on_a_directory_without_runs(tmp_path: Path, make) -> None:
    path = tmp_path / "nothing"
    make(path)
    with pytest.raises(CompareError) as info:
        find_runs([path])
    message = str(info.value)
    assert str(path) in message and "expected" in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_sweep_report_callback_writes_and_never_raises(tmp_path: Path, capsys) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.8, 0.82], "flip_only": [0.85, 0.9]})
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}}))
    assert (root / "comparison.md").is_file() and "aug=flip_only" in capsys.readouterr().out

    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "missing")}}}))
    SweepReport().on_multirun_end(OmegaConf.create({}))  # not even a sweep dir
    err = capsys.readouterr().err
    assert err.count("no sweep comparison written") == 2 and len(err.splitlines()) == 2


def test_sweep_report_refreshes_after_each_multirun_job(tmp_path: Path, monkeypatch, capsys) -> None:
    root = make_sweep(tmp_path / "outputs" / "multirun" / "day" / "time", {"none": [0.8], "flip_only": [0.9]})
    # As Hydra calls it with hydra.job.chdir=true: cwd is the job directory, the sweep dir is relative to the start dir.
    monkeypatch.chdir(root / "0")
    hydra = {"sweep": {"dir": "outputs/multirun/day/time"}, "runtime": {"cwd": str(tmp_path)}}
    SweepReport().on_job_end(OmegaConf.create({"hydra": {**hydra, "mode": RunMode.RUN}}), job_return=None)
    assert not (root / "comparison.csv").exists()  # a single run has no sweep to compare
    SweepReport().on_job_end(OmegaConf.create({"hydra": {**hydra, "mode": RunMode.MULTIRUN}}), job_return=None)
    assert "aug=flip_only" in (root / "comparison.csv").read_text()
    assert capsys.readouterr() == ("", "")  # silent: the table is printed once, at the end of the sweep


APP = '''
import json, hydra
from pathlib import Path
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

ConfigStore.instance().store(name="cfg", node={"aug": "none", "seed": 0,
    "hydra": {"callbacks": {"report": {"_target_": "augrun.compare.SweepReport"}}}})

@hydra.main(version_base="1.3", config_path=None, config_name="cfg")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.aug == "broken":  # as augrun's train task does: record the failure and return, so the sweep goes on
        (out / "summary.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
        return
    rows = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.7, "test_acc": {"none": 0.5, "flip_only": 0.6}[cfg.aug]}]
    (out / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\\n")
    (out / "summary.json").write_text(json.dumps({"status": "completed", "final": rows[0], "error": None}))

main()
'''


@pytest.mark.slow
def test_real_hydra_multirun_gets_a_report(tmp_path: Path) -> None:
    """End to end through Hydra: the callback from the config, the relative sweep dir with ${now:...} resolved to the
    same directory at the end of the sweep as during it, a failed job marked."""
    (tmp_path / "app.py").write_text(APP)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    args = [sys.executable, "app.py", "-m", "aug=none,flip_only,broken", "hydra.job.chdir=true"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Δ vs none" in proc.stdout and "aug=broken seed 0 (failed): boom" in proc.stdout  # on_multirun_end printed
    (root,) = (tmp_path / "multirun").glob("*/*")
    rows = read_csv(root / "comparison.csv")
    assert {k: (v["n_seeds"], v["n_failed"]) for k, v in rows.items()} == {
        "aug=broken": ("0", "1"), "aug=flip_only": ("1", "0"), "aug=none": ("1", "0")}  # fmt: skip
    assert float(rows["aug=flip_only"]["delta_vs_none"]) == pytest.approx(0.1)


def test_plot_curves_redrawn_each_epoch_leaves_one_png(tmp_path: Path) -> None:
    path = tmp_path / "run" / "curves.png"
    rows = epochs_for(0.8, n=10)
    for n in range(1, 11):  # redrawn every epoch, as the trainer does (its speed is not a test's business)
        plot_curves(rows[:n], path, title="aug=none", epochs=10)
    with Image.open(path) as img:
        assert img.format == "PNG" and 200 <= img.width <= 1000 and 150 <= img.height <= 800
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temp files left behind


def test_plot_curves_skips_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    plot_curves([{"epoch": 1, "train_loss": 2.3, "train_acc": 0.1, "test_acc": None}], path)
    assert path.stat().st_size > 0


def test_compare_command(tmp_path: Path, capsys) -> None:
    root = make_sweep(tmp_path / "sweep", {"none": [0.8, 0.82], "flip_only": [0.85, 0.9]})
    compare_command([str(root)])
    assert (root / "comparison.csv").is_file() and "aug=flip_only" in capsys.readouterr().out
    compare_command([str(root / "0"), str(root / "2"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "comparison.md").is_file()

    for argv in ([], [str(tmp_path / "missing")], [str(root), "--bogus"], [str(root / "0"), str(root / "1")]):
        with pytest.raises(SystemExit) as info:
            compare_command(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("augrun: error: ") and err.count("\n") == 1
