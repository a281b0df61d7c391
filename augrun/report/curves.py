"""The per-run training plot (the d2l book's Animator picture) and atomic figure saving.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never through pyplot: pyplot keeps
every figure in a global registry (a leak when redrawn every epoch) and picks a GUI backend from the environment, which
fails on headless machines. A bare ``Figure`` needs no display and is freed when it goes out of scope.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from augrun.files import atomic_open

# The book's legend and line formats: Animator(legend=['train loss', 'train acc', 'test acc'],
# fmts=('-', 'm--', 'g-.')).
CURVES = (("train_loss", "train loss", "-"), ("train_acc", "train acc", "m--"), ("test_acc", "test acc", "g-."))


class InlineFigure(Figure):
    """A Figure that Jupyter shows inline as a PNG when it is a cell's value, as pyplot's figures are shown: without
    this a bare Figure shows as its repr text unless pyplot was imported. Where pyplot's inline backend is active,
    IPython's own printer for Figures is used instead, so a figure is never shown twice."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
        return buffer.getvalue()


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` atomically, in the format its suffix names."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    # PNG: drop the "Software: matplotlib x.y" text chunk, so an unchanged plot keeps its bytes after an upgrade.
    metadata = {"Software": None} if fmt == "png" else None
    with atomic_open(path) as f:
        fig.savefig(f, format=fmt, dpi=dpi, metadata=metadata)


def integer_epochs(ax: Axes) -> None:
    """Epoch ticks at whole numbers (a 2-epoch run would otherwise get ticks 1.0, 1.2, ...).

    min_n_ticks=1: MaxNLocator keeps to integers only where it finds min_n_ticks of them in view, and the default of 2
    made a single epoch, which autoscales to about 0.945-1.055, fall back to ticks 0.945, 0.96, ... 1.05.
    """
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")


def plot_curves(records: list[dict], path: Path, title: str = "", epochs: int | None = None) -> None:
    """Write curves.png: ``curves_figure`` saved to ``path`` atomically."""
    save_figure(curves_figure(records, title, epochs), path)


def curves_figure(records: list[dict], title: str = "", epochs: int | None = None) -> Figure:
    """Train loss, train acc and test acc against epoch on one axes, as the book's ``train_ch13`` draws them.

    ``records`` are metrics.jsonl rows (keys epoch, train_loss, train_acc, test_acc; a missing or null value is
    skipped). ``epochs``, the planned epoch count, fixes the x range like the book's ``xlim=[1, num_epochs]`` so the
    axes do not rescale every time the plot is redrawn; without it the range ends at the last recorded epoch.
    """
    fig = InlineFigure(figsize=(3.5, 2.5))  # the book's Animator figsize
    ax = fig.add_subplot()
    top = 1.0
    for key, label, fmt in CURVES:
        points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None and r.get("epoch") is not None]
        if not points:
            continue
        xs, ys = zip(*points)
        # A single point draws no line; a marker keeps the first epoch visible.
        ax.plot(xs, ys, fmt, label=label, marker="o" if len(xs) == 1 else None)
        top = max(top, *ys)
    last = max((r["epoch"] for r in records if r.get("epoch") is not None), default=1)
    ax.set_xlim(1, max(epochs or last, 2))
    # The book fixes ylim=[0, 1]; the first epochs' loss (~2.3 on 10 classes) would be cut off, so the top grows.
    ax.set_ylim(0, top * 1.05 if top > 1 else 1)
    integer_epochs(ax)
    ax.grid(True)
    if ax.lines:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title, fontsize="small")
    # Fixed margins instead of tight_layout, which measures every label and would be half the cost of each redraw.
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.19, top=0.9 if title else 0.96)
    return fig
