"""report.pdf: per run an overview page (dataset, search, the tables) and pages of key plots."""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from heartjax.report.formatting import fmt_value, metric_label
from heartjax.report.overview import operating_text, overview_lines
from heartjax.report.plots import draw_metric_vs_param, plot_key, pyplot
from heartjax.report.run_report import RunReport
from heartjax.report.runs import Param, Run
from heartjax.report.tables import display_columns, display_rows, loss_cells, model_groups

PAGE = (11.69, 8.27)  # A4 landscape, inches
TOP_PDF_ROWS = 10  # rows of the table on the overview page
PER_ROW = 5  # metric-vs-hyperparameter scatters in a row
GROUP_TITLES = {"hp": ("hyperparameters (blank = as base)", "hyperparameters", "hp"),
                "val": ("validation (best epoch, arg-max)", "validation", "val"),
                "test": ("test (best checkpoint, its decision rule)", "test", "test")}
GROUP_SHADES = {"hp": "#fff1cc", "val": "#d9e8f6", "test": "#daf0da", "": "#e6e6e6"}


def _draw_table(fig, headers: list[str], groups: list[str], rows: list[list[str]], top: float,
                bottom: float, base_row: bool = False, max_fs: float = 8.5) -> float:
    """A table drawn with text and rectangles below figure height `top`.

    It is sized in points so the font stays as large as the page width allows; the columns of a
    group share a titled band. Returns the figure height of its bottom edge.
    """
    import matplotlib.patches as mpatches

    chars = [max([len(x) for x in h.split("\n")] + [len(r[j]) for r in rows]) + 2.2
             for j, h in enumerate(headers)]
    fs = min(max_fs, 0.96 * PAGE[0] * 72 / (sum(chars) * 0.6))  # DejaVu Sans: ~0.6 em a char
    widths = [c * fs * 0.6 for c in chars]
    row_h = fs * 1.75
    head_lines = max(h.count("\n") + 1 for h in headers)
    heights = [row_h * 1.1, row_h * (0.55 + 0.55 * head_lines)] + [row_h] * len(rows)
    W, H = sum(widths), sum(heights)
    h_frac = min(H / (PAGE[1] * 72), top - bottom)
    ax = fig.add_axes([0.02, top - h_frac, W / (PAGE[0] * 72), h_frac])
    ax.set_xlim(0, W)
    ax.set_ylim(-H, 0)
    ax.axis("off")
    xs = np.r_[0.0, np.cumsum(widths)]
    ys = -np.r_[0.0, np.cumsum(heights)]
    j = 0
    while j < len(headers):  # a band with the group's title over each run of its columns
        k = j
        while k + 1 < len(headers) and groups[k + 1] == groups[j]:
            k += 1
        if groups[j]:
            span = xs[k + 1] - xs[j]
            title = next((t for t in GROUP_TITLES.get(groups[j], (groups[j],))
                          if len(t) * fs * 0.6 < span - 4), "")
            ax.add_patch(mpatches.Rectangle((xs[j] + 1, ys[1] + 1), span - 2, heights[0] - 2,
                                            fc=GROUP_SHADES.get(groups[j], "#e6e6e6"), ec="none"))
            ax.text((xs[j] + xs[k + 1]) / 2, (ys[0] + ys[1]) / 2, title, ha="center",
                    va="center", fontsize=fs, fontweight="bold")
        j = k + 1
    for j, h in enumerate(headers):
        ax.add_patch(mpatches.Rectangle((xs[j], ys[2]), widths[j], heights[1], ec="white", lw=1,
                                        fc=GROUP_SHADES.get(groups[j], "#e6e6e6")))
        ax.text((xs[j] + xs[j + 1]) / 2, (ys[1] + ys[2]) / 2, h, ha="center", va="center",
                fontsize=fs, fontweight="bold", linespacing=1.1)
    for i, r in enumerate(rows):
        y0, y1 = ys[2 + i], ys[3 + i]
        bold = i == 0 and base_row
        if bold or i % 2 == 1:
            ax.add_patch(mpatches.Rectangle((0, y1), W, row_h, ec="none",
                                            fc="#fff8dc" if bold else "#f4f4f4"))
        for j, text in enumerate(r):
            ax.text((xs[j] + xs[j + 1]) / 2, (y0 + y1) / 2, text, ha="center", va="center",
                    fontsize=fs, fontweight="bold" if bold else "normal")
    for y, lw in [(ys[2], 0.8), (ys[-1], 0.8)] + ([(ys[3], 0.5)] if base_row else []):
        ax.plot([0, W], [y, y], color="black" if lw > 0.5 else "0.4", lw=lw)
    return top - h_frac


def _write_lines(fig, lines: Sequence[str], y: float, width: int, **kw) -> float:
    """Lines wrapped to `width` characters, top-down from figure height `y`; returns the next y."""
    for ln in lines:
        for part in textwrap.wrap(ln, width, subsequent_indent="    ") or [""]:
            fig.text(0.02, y, part, fontsize=9, va="top", **kw)
            y -= 0.0235
    return y


def _overview_page(pdf, r: RunReport) -> None:
    """Page 1 of a run: what was searched on which data, a table per architecture while the page
    has room, and the loss table."""
    plt = pyplot()
    run = r.run
    fig = plt.figure(figsize=PAGE)
    fig.text(0.02, 0.965, f"heartjax tuning report: {run.name}", fontsize=17,
             fontweight="bold", va="top")
    fig.text(0.02, 0.922, f"{run.dataset} · generated {time.strftime('%Y-%m-%d %H:%M')}",
             fontsize=9, color="0.35", va="top")
    body = overview_lines(r)[1:] + operating_text(r)[:2] + [f"Note: {n}" for n in r.notes]
    y = _write_lines(fig, body, 0.885, 160)
    groups = model_groups(run, r.table)
    key = (f"Trials by {run.metric}, a table per architecture: its first row is its best trial; "
           "a blank hyperparameter is the first row's value; R = recall, acc = accuracy.")
    y = _write_lines(fig, [key], y - 0.012, 150, fontweight="bold")
    limit = TOP_PDF_ROWS if len(groups) == 1 else TOP_PDF_ROWS // 2
    for n, g in enumerate(groups):
        rows_shown = min(limit, len(g.table))
        if y - (rows_shown + 4) * 0.03 < 0.03:  # no room: the rest is in summary.md
            _write_lines(fig, [f"{', '.join(h.model for h in groups[n:])}: in summary.md"], y, 150)
            y = 0.0
            break
        what = (f"all {rows_shown}" if rows_shown == len(g.table)
                else f"the top {rows_shown} of {len(g.table)}")
        alike = ", ".join(f"{k} {fmt_value(v)}" for k, v in g.fixed.items())
        y = _write_lines(fig, [f"{g.model}: {what} trials" + (f"; alike in all: {alike}"
                                                              if alike else "")], y, 160)
        cols = display_columns(run, g.table, g.params)
        rows = display_rows(run, g.table, cols, limit)
        y = _draw_table(fig, [c.pdf for c in cols], [c.group for c in cols], rows, y - 0.004,
                        0.03, base_row=bool(g.table["base"].iloc[0])) - 0.02
    for title, df in r.losses[:1]:  # the finer split (by power) is in summary.md
        headers, groups_, rows = loss_cells(df)
        if y - (len(rows) + 4) * 0.026 < 0.02:
            break
        fig.text(0.02, y - 0.015, "What the loss did to per-class recall: mean recall over the "
                 f"trials, {title}", fontsize=9, fontweight="bold", va="top")
        _draw_table(fig, headers, groups_, rows, y - 0.045, 0.02, max_fs=8)
    pdf.savefig(fig)
    plt.close(fig)


def _place_images(fig, images: Sequence[Path], box: tuple[float, float, float, float]) -> None:
    """PNGs side by side in the figure rectangle `box` (x, y, w, h), aspect kept."""
    x, y, w, h = box
    cell = w / len(images)
    for k, img in enumerate(images):
        ax = fig.add_axes([x + k * cell, y, cell, h])
        ax.imshow(pyplot().imread(img), interpolation="antialiased")
        ax.axis("off")


def _page(title: str):
    fig = pyplot().figure(figsize=PAGE)
    fig.text(0.5, 0.975, title, fontsize=13, fontweight="bold", ha="center", va="top")
    return fig


def _metric_grid(fig, run: Run, params: list[Param], height: float) -> None:
    """Compact metric-vs-hyperparameter scatters in rows at the bottom of a page."""
    nrows = math.ceil(len(params) / PER_ROW)
    w, row_h = 0.94 / PER_ROW, height / nrows
    axes = []
    for i, q in enumerate(params):
        r, c = divmod(i, PER_ROW)
        ax = fig.add_axes([0.05 + c * w, 0.115 + (nrows - 1 - r) * row_h, w - 0.045,
                           row_h - 0.085])
        draw_metric_vs_param(ax, run, q, compact=True)
        ax.tick_params(labelsize=8)
        ax.xaxis.label.set_size(8.5)
        if c == 0:
            ax.set_ylabel(f"{metric_label(run.metric)} (0-1)", fontsize=8.5)
        axes.append(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 0.005))


def _plot_pages(pdf, r: RunReport) -> None:
    """Pages 2+ of a run: the search (learning curves, parallel coordinates), then the best
    model on test and the tuning metric against each hyperparameter."""
    plt = pyplot()
    p, run = r.plots, r.run
    search = [p[k] for k in ("learning_curves", "parallel_coordinates") if k in p]
    if search:
        fig = _page(f"{run.name}: how the search went")
        h = 0.92 / len(search)
        for i, img in enumerate(search):
            _place_images(fig, [img], (0.02, 0.94 - (i + 1) * h, 0.96, h - 0.01))
        pdf.savefig(fig)
        plt.close(fig)
    best = [p[k] for k in ("confusion_matrix", "per_class_recall", "pr_curve") if k in p]
    params = [q for q in run.params if plot_key(q) in p]
    pages = [(best, params[:PER_ROW])]
    pages += [([], params[i:i + 2 * PER_ROW]) for i in range(PER_ROW, len(params), 2 * PER_ROW)]
    where = "on test" if "confusion_matrix" in p else "(no test metrics)"
    for n, (top, chunk) in enumerate(pages):
        if n == 0:
            title = (f"{run.name}: the best trial {run.best_id} {where}, and "
                     f"{metric_label(run.metric)} against each hyperparameter")
        else:
            title = f"{run.name}: {metric_label(run.metric)} against each hyperparameter (cont.)"
        fig = _page(title)
        y_split = 0.39 if top and chunk else 0.03
        if top:
            _place_images(fig, top, (0.01, y_split, 0.98, 0.935 - y_split))
        if chunk:
            _metric_grid(fig, run, chunk, 0.31 if top else 0.86)
        pdf.savefig(fig)
        plt.close(fig)


def write_pdf(reports: list[RunReport], path: Path) -> Path:
    """report.pdf: per run an overview page and its key plots."""
    pyplot()
    from matplotlib.backends.backend_pdf import PdfPages

    meta = {"Title": "heartjax tuning report", "Creator": "heartjax.report"}
    with PdfPages(path, metadata=meta) as pdf:
        for r in reports:
            _overview_page(pdf, r)
            _plot_pages(pdf, r)
    return path
