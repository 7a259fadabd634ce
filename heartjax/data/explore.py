"""Summaries and plots of a beat table, for `python -m heartjax.data check`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from heartjax.data.tables import FS, RR_COLUMNS, SIGNAL_LEN, BeatTable
from heartjax.errors import UserError

EXAMPLES_PER_CLASS = 4
COLORS = ("tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:green")


def summary(table: BeatTable) -> str:
    """Rows, per-class counts, value range and extra columns of a table, as text."""
    names = table.class_names
    lines = [f"file: {table.path or '(in memory)'}",
             f"dataset: {table.dataset} ({len(names)} classes)",
             f"rows: {len(table)}",
             "classes:"]
    counts = np.bincount(table.y, minlength=len(names))
    for k, name in enumerate(names):
        lines.append(f"  {k} {name:<9} {counts[k]:>7}  {100.0 * counts[k] / len(table):6.2f}%")
    x = table.x
    lines.append(f"values: min {x.min():.4f}  max {x.max():.4f}  mean {x.mean():.4f}")
    if x.min() < 0 or x.max() > 1:
        lines.append("note: values outside [0, 1]; published beats are normalised to [0, 1]")
    extra = list(table.meta.columns)
    lines.append(f"extra columns: {', '.join(map(str, extra)) if extra else '(none)'}")
    if "record" in table.meta:
        lines.append(f"records: {table.meta['record'].nunique()}")
    if "lead" in table.meta:
        if "record" in table.meta:
            shown = table.meta.groupby("lead")["record"].nunique().to_dict()
            lines.append(f"leads (records per lead): {shown}")
        else:
            lines.append(f"leads (beats per lead): {table.meta['lead'].value_counts().to_dict()}")
    rr = table.rr
    if rr is not None:
        for c, name in enumerate(RR_COLUMNS):
            lines.append(f"{name}: min {rr[:, c].min():.3f} s  median {np.median(rr[:, c]):.3f} s  "
                         f"max {rr[:, c].max():.3f} s")
    return "\n".join(lines)


def write_plots(table: BeatTable, out_dir: str | Path, seed: int = 0) -> list[Path]:
    """Write class_balance.png, example_beats.png and mean_beats.png into `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the plot folder ({e.strerror or e})") from None
    title = Path(table.path).name or table.dataset
    paths = []
    for name, draw in (("class_balance.png", _class_balance), ("example_beats.png", _examples),
                       ("mean_beats.png", _mean_beats)):
        fig = draw(plt, table, title, np.random.default_rng(seed))
        path = out / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def _class_balance(plt, table: BeatTable, title: str, rng: np.random.Generator):
    names = table.class_names
    counts = np.bincount(table.y, minlength=len(names))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bars = ax.bar(names, counts, color=COLORS[:len(names)])
    for bar, n in zip(bars, counts):
        ax.annotate(f"{n}\n{100.0 * n / counts.sum():.1f}%",
                    (bar.get_x() + bar.get_width() / 2, n), ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, counts.max() * 1.2)
    ax.set_xlabel("class")
    ax.set_ylabel("beats")
    ax.set_title(f"Class balance: {title} ({len(table)} beats)")
    return fig


def _class_axes(plt, n: int, title: str):
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), sharey=True, squeeze=False)
    fig.suptitle(title)
    return fig, axes[0]


def _time_axis() -> np.ndarray:
    return np.arange(SIGNAL_LEN) / FS


def _decorate(ax, name: str, count: int, t: np.ndarray) -> None:
    ax.set_title(f"{name} ({count} beats)")
    ax.set_xlabel("time from R peak (s)")
    ax.set_xlim(0, t[-1])
    ax.grid(alpha=0.3)
    if not count:
        ax.text(0.5, 0.5, "no beats", transform=ax.transAxes, ha="center", va="center")


def _examples(plt, table: BeatTable, title: str, rng: np.random.Generator):
    names = table.class_names
    fig, axes = _class_axes(plt, len(names), f"Example beats: {title}")
    t = _time_axis()
    for k, (ax, name) in enumerate(zip(axes, names)):
        rows = np.flatnonzero(table.y == k)
        for row in rng.choice(rows, size=min(EXAMPLES_PER_CLASS, len(rows)), replace=False):
            ax.plot(t, table.x[row], lw=1)
        _decorate(ax, name, len(rows), t)
    axes[0].set_ylabel("normalised amplitude")
    fig.tight_layout()
    return fig


def _mean_beats(plt, table: BeatTable, title: str, rng: np.random.Generator):
    names = table.class_names
    fig, axes = _class_axes(plt, len(names), f"Mean beat ± 1 std: {title}")
    t = _time_axis()
    for k, (ax, name) in enumerate(zip(axes, names)):
        x = table.x[table.y == k]
        if len(x):
            mean, std = x.mean(axis=0), x.std(axis=0)
            color = COLORS[k % len(COLORS)]
            ax.fill_between(t, mean - std, mean + std, color=color, alpha=0.25, label="± 1 std")
            ax.plot(t, mean, color=color, lw=1.5, label="mean")
            if k == 0 or not (table.y < k).any():  # one legend is enough
                ax.legend(loc="upper right", fontsize=8)
        _decorate(ax, name, len(x), t)
    axes[0].set_ylabel("normalised amplitude")
    fig.tight_layout()
    return fig
