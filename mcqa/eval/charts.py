"""The charts of report.html and compare.html, each a matplotlib figure returned as a
`data:image/png;base64,...` URI, so a page carries its images inside itself and opens with no
network and no other file. matplotlib is imported when a chart is drawn (Agg, no display)."""

from __future__ import annotations

import base64
import io
import math
import textwrap
from typing import Any, Sequence

DPI = 100
# One palette for every page: the run itself, its intervals, what the page marks.
MAIN, SECOND, MARK, GRID = "#2563eb", "#f59e0b", "#dc2626", "#d4d4d8"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _uri(fig) -> str:
    plt = _plt()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _text(s: str) -> str:
    return str(s).replace("$", r"\$")  # a '$' in a name from a run folder would start mathtext


def _style(ax) -> None:
    ax.grid(axis="x", color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def reliability(bins: Sequence[dict[str, float]], ece: float, field: str) -> str:
    """Accuracy against mean confidence per confidence bin (bars: how many examples), beside the
    diagonal a calibrated model would follow."""
    plt = _plt()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.2, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="#71717a", linewidth=1, label="calibrated")
    conf = [b["confidence"] for b in bins]
    ax.plot(conf, [b["accuracy"] for b in bins], "-", color=MAIN, linewidth=1, alpha=0.6)
    # a point's area grows with its bin, so a bin of one example does not look like evidence
    top = max(b["count"] for b in bins)
    ax.scatter(
        conf,
        [b["accuracy"] for b in bins],
        s=[12 + 140 * b["count"] / top for b in bins],
        color=MAIN,
        zorder=3,
        label="this run (area: examples)",
        clip_on=False,
    )
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{_text(field)}: ECE {ece:.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    hist.bar(conf, [b["count"] for b in bins], width=0.05, color=MAIN, alpha=0.5)
    hist.set_xlim(0, 1.02)
    hist.set_xlabel("confidence (top probability)")
    hist.set_ylabel("examples")
    for a in (ax, hist):
        _style(a)
    return _uri(fig)


def positions(letters: Sequence[str], gold: Sequence[int], predicted: Sequence[int], failed: int) -> str:
    """How often each option position is the gold and how often it is predicted."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * len(letters) + 2), 3))
    x = range(len(letters))
    ax.bar([i - 0.2 for i in x], gold, 0.4, label="gold", color="#a1a1aa")
    ax.bar([i + 0.2 for i in x], predicted, 0.4, label="predicted", color=MAIN)
    ax.set_xticks(list(x), [_text(c) for c in letters])
    ax.set_xlabel("option position" + (f" ({failed} answers failed to parse)" if failed else ""))
    ax.set_ylabel("examples")
    ax.set_ylim(0, 1.25 * max([*gold, *predicted, 1]))
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    _style(ax)
    ax.grid(axis="y", color=GRID, linewidth=0.6)
    return _uri(fig)


def loss_curve(points: Sequence[tuple[float, float]], kept_epoch: float | None) -> str:
    """Training loss at each logging step, by epoch; the kept epoch is a vertical line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.9, 3))
    ax.plot(
        [e for e, _ in points],
        [v for _, v in points],
        color=MAIN,
        linewidth=1.2,
        marker="." if len(points) < 60 else None,
    )
    if kept_epoch is not None:
        ax.axvline(kept_epoch, color=MARK, linestyle="--", linewidth=1, label=f"kept: epoch {kept_epoch:g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    _style(ax)
    return _uri(fig)


def validation_curve(
    epochs: Sequence[float], series: dict[str, Sequence[float | None]], chosen: str, kept_epoch: float | None
) -> str:
    """Each validation metric per epoch; the one that picks the epoch drawn boldest and the kept
    epoch ringed on it."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.9, 3))
    for name, values in series.items():
        pts = [(e, v) for e, v in zip(epochs, values) if v is not None]
        bold = name == chosen
        ax.plot(
            [e for e, _ in pts],
            [v for _, v in pts],
            marker="o",
            markersize=4 if bold else 3,
            linewidth=2.2 if bold else 1,
            alpha=1 if bold else 0.55,
            label=_text(name),
            color=MAIN if bold else None,
        )
        if bold and kept_epoch is not None:
            kept = [v for e, v in pts if e == kept_epoch]
            if kept:
                ax.plot(
                    [kept_epoch],
                    kept,
                    "o",
                    markersize=13,
                    markerfacecolor="none",
                    markeredgecolor=MARK,
                    markeredgewidth=2,
                    clip_on=False,
                )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation")
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _style(ax)
    return _uri(fig)


def _label(name: str, width: int = 34) -> str:
    return "\n".join(textwrap.wrap(_text(name), width)[:3]) or " "


def _span(values: Sequence[float], pad: float, lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    """Axis limits around the values, padded, rounded out to tens (and kept within lo..hi)."""
    a, b = math.floor((min(values) - pad) / 10) * 10, math.ceil((max(values) + pad) / 10) * 10
    return (a if lo is None else max(lo, a)), (b if hi is None else min(hi, b))


def compare_rows(names: Sequence[str], panels: Sequence[tuple[str, Sequence[tuple[float, list[float] | None]]]]) -> str:
    """A panel per metric, a line per row: its value and 95% interval (in %)."""
    plt = _plt()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.6 * len(panels) + 2.6, 0.42 * len(names) + 1.1), sharey=True, squeeze=False
    )
    ends = [100 * x for _, values in panels for v, ci in values for x in (ci or [v])]
    for ax, (title, values) in zip(axes[0], panels):
        for i, (v, ci) in enumerate(values):
            y = len(names) - 1 - i
            if ci:
                ax.plot(
                    [100 * ci[0], 100 * ci[1]], [y, y], color=MAIN, linewidth=2.5, alpha=0.35, solid_capstyle="butt"
                )
            ax.plot([100 * v], [y], "o", color=MAIN, markersize=4)
        ax.set_title(_text(title), fontsize=9)
        lo, hi = _span(ends, 2, 0, 100)
        ax.set_xlim(
            lo - 1, hi + 1
        )  # one scale for every panel, zoomed to where the rows are; a point at 100 stays whole
        ax.set_xlabel("accuracy, %", fontsize=8)
        _style(ax)
    axes[0][0].set_yticks(range(len(names)), [_label(n) for n in reversed(names)], fontsize=8)
    axes[0][0].set_ylim(-0.6, len(names) - 0.4)
    return _uri(fig)


def paired(names: Sequence[str], against: str, panels: Sequence[tuple[str, Sequence[dict[str, Any] | None]]]) -> str:
    """A panel per metric, a line per row: its paired accuracy difference from `against` with the
    paired 95% interval, in points; a difference whose interval excludes 0 is drawn in red."""
    plt = _plt()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.6 * len(panels) + 2.6, 0.42 * len(names) + 1.3), sharey=True, squeeze=False
    )
    for ax, (title, diffs) in zip(axes[0], panels):
        ax.axvline(0, color="#71717a", linewidth=1)
        for i, d in enumerate(diffs):
            y = len(names) - 1 - i
            if d is None:
                if names[i] == against:
                    ax.text(0, y, " reference", va="center", fontsize=7, color="#71717a")
                continue
            lo, hi = d["ci"]
            colour = MARK if lo > 0 or hi < 0 else MAIN
            ax.plot([100 * lo, 100 * hi], [y, y], color=colour, linewidth=2.5, alpha=0.4, solid_capstyle="butt")
            ax.plot([100 * d["difference"]], [y], "o", color=colour, markersize=4)
        ax.set_title(_text(title), fontsize=9)
        ax.set_xlabel(f"points vs {_label(against, 24)}", fontsize=8)
        _style(ax)
    axes[0][0].set_yticks(range(len(names)), [_label(n) for n in reversed(names)], fontsize=8)
    axes[0][0].set_ylim(-0.6, len(names) - 0.4)
    return _uri(fig)
