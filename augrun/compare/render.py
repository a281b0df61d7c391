"""A comparison as files and on the console: comparison.md (the table, failed jobs, noise notes), comparison.csv (full
precision), comparison.png (mean ± std curves per group), and the rich table. The same runs give the same bytes."""
from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.table import Table

import augrun.compare.search as search
from augrun.compare.gains import gains_lines
from augrun.compare.runs import CompareError, RunResult, _one_line, _reason, environment_warning, find_runs, load_run
from augrun.compare.stats import BASELINE_KEY, BASELINE_VALUE, METRICS, Group, Report, Stat, _stat, build_report
from augrun.errors import printable
from augrun.files import write_text_atomic
from augrun.report.curves import InlineFigure, integer_epochs, save_figure

CSV_COLUMNS = (
    "group", "n_seeds", "n_failed",
    "test_acc_mean", "test_acc_std", "best_test_acc_mean", "best_test_acc_std", "train_acc_mean", "train_acc_std",
    "gap_mean", "gap_std", "loss_mean", "loss_std", "examples_per_s_mean", "delta_vs_none", "within_noise",
)  # fmt: skip
OUT_VALID = "valid: --out DIR naming a directory that can be written (made if missing)"


def table_console() -> Console:
    """A console for the wide comparison table: rich would fold it into 80 columns when output goes to a file or pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _fmt_stat(stat: Stat, digits: int) -> str:
    if stat.mean is None:
        return "-"
    # No spaces around ±: ten columns must fit a terminal (the CSV keeps the full precision).
    return f"{stat.mean:.{digits}f}±{'-' if stat.std is None else f'{stat.std:.{digits}f}'}"


def _fmt_delta(group: Group) -> str:
    if group.delta_vs_none is None:
        return "baseline" if group.key.get(BASELINE_KEY) == BASELINE_VALUE else ""
    tag = {True: " (noise)", False: "", None: " (1 seed)"}[group.within_noise]
    return f"{group.delta_vs_none:+.3f}{tag}"


# Short headers so that ten columns fit an 80-column terminal; the markdown explains gap and Δ below the table.
TABLE_HEADERS = (
    "group", "seeds", "failed", "test acc", "best test", "train acc", "gap", "loss", "img/s", "Δ vs none",
)  # fmt: skip


def _table_rows(report: Report) -> list[list[str]]:
    """The human table (markdown and console share it): mean ± sample std over completed seeds."""
    digits = {"examples_per_s": 0}  # the rest at 3 decimals, as the book prints accuracies
    return [
        [g.label, str(len(g.completed)), str(len(g.failed))]
        + [_fmt_stat(g.stats[m], digits.get(m, 3)) for m in METRICS]
        + [_fmt_delta(g)]
        for g in report.groups
    ]


def _failed_lines(report: Report) -> list[str]:
    return [f"{g.label} seed {r.seed} ({r.status}): {r.error} [{printable(r.path)}]"
            for g in report.groups for r in g.failed]


def _notes(report: Report) -> list[str]:
    return [g.note for g in report.groups if g.note]


def comparison_markdown(report: Report, warning: str | None = None) -> str:
    md = ["# Comparison", "", "| " + " | ".join(TABLE_HEADERS) + " |", "|" + "---|" * len(TABLE_HEADERS)]
    # A "|" in an override value (e.g. a list) would split the markdown cell.
    md += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in _table_rows(report)]
    md += [
        "",
        "Mean ± sample std (ddof=1) over completed seeds; `-` where one seed gives no spread. "
        "best test = best test acc of any epoch; gap = final train acc - final test acc (overfitting); "
        "Δ vs none = mean final test acc minus that of the aug=none group with the same other overrides, "
        "within noise, marked (noise), when |Δ| < 2·sqrt(s1²/n1 + s2²/n2).",
        "",
        "## Failed jobs",
        "",
    ]
    md += [f"- {line}" for line in _failed_lines(report)] or ["none"]
    md += ["", "## Noise", ""]
    md += [f"- {line}" for line in _notes(report)] or ["no aug=none group to compare with"]
    gains = gains_lines(report)
    md += ["", "## Gain by setting", "", *[f"- {line}" for line in gains]] if gains else []
    md += [f"- warning: {warning}"] if warning else []
    return "\n".join(md) + "\n"


def _num(value: float | None) -> str:
    # 6 significant digits: enough for accuracies, stable across platforms, so equal inputs give equal files.
    return "" if value is None else f"{value:.6g}"


def comparison_rows(report: Report) -> list[dict[str, str | int | float | bool | None]]:
    """The table as numbers, one dict per group with the keys CSV_COLUMNS (None where a value is missing)."""
    rows = []
    for g in report.groups:
        s = g.stats
        values = ([g.label, len(g.completed), len(g.failed)]
                  + [x for m in METRICS[:-1] for x in (s[m].mean, s[m].std)]
                  + [s["examples_per_s"].mean, g.delta_vs_none, g.within_noise])
        rows.append(dict(zip(CSV_COLUMNS, values)))
    return rows


def _csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in comparison_rows(report):
        writer.writerow([row["group"], row["n_seeds"], row["n_failed"]]
                        + [_num(row[column]) for column in CSV_COLUMNS[3:-1]]
                        + ["" if row["within_noise"] is None else str(row["within_noise"]).lower()])
    return buf.getvalue()


def _mean_curve(runs: list[RunResult], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: mean and sample std over the runs that reached it (std 0 with one run: no band)."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run.epochs:
            if row.get(key) is not None and row.get("epoch") is not None:
                by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = sorted(by_epoch)
    stats = [_stat(by_epoch[e]) for e in epochs]
    return epochs, [s.mean for s in stats], [s.std or 0.0 for s in stats]


def comparison_figure(report: Report) -> Figure:
    """comparison.png: test and train accuracy against epoch, mean ± std over seeds, a line per group."""
    fig = InlineFigure(figsize=(10, 4))
    # One y scale for both panels, so the train-test gap (overfitting, what augmentation should shrink) reads directly.
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("test_acc", "test accuracy"), ("train_acc", "train accuracy"))
    for ax, (key, name) in zip(axes, panels):
        for j, group in enumerate(report.groups):
            epochs, mean, std = _mean_curve(group.completed, key)
            if not epochs:
                continue
            color = f"C{j % 10}"  # fixed per group order, so both panels and reruns use the same colours
            ax.plot(epochs, mean, color=color, label=f"{group.label} (n={len(group.completed)})",
                    marker="o" if len(epochs) == 1 else None)  # fmt: skip
            # Band: ± one sample std over seeds, the same spread the table reports (min/max would widen with n).
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2, linewidth=0)  # fmt: skip
        integer_epochs(ax)
        ax.set_title(f"{name} (mean ± std over seeds)", fontsize="medium")
        ax.grid(True)
        if ax.lines:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no completed runs", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("accuracy")  # shared by both panels; the titles tell them apart
    # Fixed margins for the fixed figure size: tight_layout would measure every label, a third of the drawing time.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.92, wspace=0.08)
    return fig


def write_report(runs: list[RunResult], out_dir: Path, *, searched: bool = False) -> Report:
    """Write comparison.md, comparison.csv and comparison.png to ``out_dir``; the same runs give the same files.
    `searched`: the runs are a search's trials, also listed best first (in comparison.md) and plotted (search.png)."""
    out_dir = Path(out_dir)
    report = build_report(runs)
    md, csv_path, png = out_dir / "comparison.md", out_dir / "comparison.csv", out_dir / "comparison.png"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(md, comparison_markdown(report, environment_warning(runs)) + ("\n" + search.markdown(runs) if searched else ""))
        write_text_atomic(csv_path, _csv(report))
        save_figure(comparison_figure(report), png)
        figure = search.write_figure(runs, out_dir / "search.png") if searched else None
    except OSError as e:  # a full disk, a read-only file system: what _check_out_dir cannot see in advance
        raise CompareError("", f"cannot write the report into {printable(out_dir)} ({_one_line(_reason(e))}); "
                           f"{OUT_VALID}") from None
    report.files = [md, csv_path, png] + ([figure] if figure else [])
    return report


def print_report(report: Report, console: Console) -> None:
    table = Table(title="Comparison (mean±std over seeds)", box=box.SIMPLE_HEAD)
    for i, header in enumerate(TABLE_HEADERS):
        # fold, not rich's default ellipsis: on a narrow terminal a number wraps instead of losing digits.
        table.add_column(header, justify="left" if i == 0 else "right", overflow="fold")
    for row in _table_rows(report):
        table.add_row(*row)
    console.print(table)
    for line in _failed_lines(report):
        console.print(line, style="red", highlight=False, markup=False, soft_wrap=True)
    for line in _notes(report) + gains_lines(report):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if report.files:
        written = ", ".join(str(p) for p in report.files)
        console.print(f"wrote {written}", highlight=False, markup=False, soft_wrap=True)


def compare_paths(paths: list[Path], out_dir: Path, console: Console | None = None) -> Report:
    """The whole ``augrun compare``: find, load, write to ``out_dir``, and print when given a console."""
    runs = [load_run(p) for p in find_runs(paths)]
    report = write_report(runs, out_dir, searched=search.is_search(runs))
    if console is not None:
        print_report(report, console)
        warning = environment_warning(runs)
        if warning:
            print(f"augrun: warning: {warning}", file=sys.stderr)
    return report
