"""Forest, funnel and Kaplan–Meier plots (matplotlib, no GUI: figures are built with
`matplotlib.figure.Figure`, which renders through Agg and never touches pyplot's global state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from lifelines import KaplanMeierFitter
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from regenguide.evidence.meta import MetaResult
from regenguide.evidence.survival import validate_survival_data


def _fmt(x: float, ratio: bool) -> str:
    return f"{math.exp(x):.2f}" if ratio else f"{x:.2f}"


def forest_plot(result: MetaResult, path: str | Path, title: str | None = None) -> Path:
    """Forest plot: one row per study (square sized by weight, CI whiskers), the pooled diamond and,
    for random-effects fits, the prediction interval. Ratio measures are drawn on a log axis."""
    ratio = result.measure.is_ratio
    k = result.k
    height = max(3.0, 0.32 * (k + 4))
    fig = Figure(figsize=(9, height))
    ax = fig.add_subplot(1, 1, 1)
    ys = np.arange(k, 0, -1, dtype=float) + 1
    tr = np.exp if ratio else (lambda v: v)
    weights = np.array([s.weight for s in result.studies])
    sizes = 20 + 180 * weights / max(weights.max(), 1e-12)
    for y, s, size in zip(ys, result.studies, sizes, strict=True):
        ax.plot([tr(s.ci_low), tr(s.ci_high)], [y, y], color="black", lw=1)
        ax.scatter([tr(s.yi)], [y], marker="s", s=size, color="#1f4e79", zorder=3)
    dy = 0.35
    diamond_x = [tr(result.ci_low), tr(result.estimate), tr(result.ci_high), tr(result.estimate)]
    ax.fill(diamond_x, [0.5, 0.5 + dy, 0.5, 0.5 - dy], color="#b22222", zorder=3)
    if result.tau2 > 0 and result.pi_low is not None and result.pi_high is not None:
        ax.plot([tr(result.pi_low), tr(result.pi_high)], [0.5, 0.5], color="#b22222", lw=1, ls="--")
    ax.axvline(1.0 if ratio else 0.0, color="grey", lw=0.8)
    if ratio:
        ax.set_xscale("log")
    labels = [
        f"{s.study}   {_fmt(s.yi, ratio)} [{_fmt(s.ci_low, ratio)}, {_fmt(s.ci_high, ratio)}]  {s.weight:.1f}%"
        for s in result.studies
    ]
    pooled = (
        f"{result.method.value}{' (KH)' if result.knha else ''}   {_fmt(result.estimate, ratio)} "
        f"[{_fmt(result.ci_low, ratio)}, {_fmt(result.ci_high, ratio)}]"
    )
    ax.set_yticks([*ys, 0.5], labels=[*labels, pooled], fontsize=8)
    ax.set_ylim(-0.2, k + 1.8)
    measure = result.measure.value
    ax.set_xlabel(f"{measure}" + (" (log scale)" if ratio else ""))
    ax.set_title(
        title
        or f"{measure}, {result.method.value}: I² = {result.i2:.1f}%, τ² = {result.tau2:.4g}, "
        f"Q = {result.q:.2f} (p = {result.q_p:.3g})",
        fontsize=9,
    )
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out


def funnel_plot(result: MetaResult, path: str | Path, title: str | None = None) -> Path:
    """Funnel plot: effect size against standard error (inverted axis) with the pseudo-95% region
    around the pooled estimate."""
    yi = np.array([s.yi for s in result.studies])
    se = np.sqrt(np.array([s.vi for s in result.studies]))
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(1, 1, 1)
    top = float(se.max()) * 1.05
    grid = np.linspace(0, top, 50)
    ax.fill_betweenx(grid, result.estimate - 1.96 * grid, result.estimate + 1.96 * grid, color="#eeeeee")
    ax.plot(result.estimate - 1.96 * grid, grid, color="grey", lw=0.8, ls="--")
    ax.plot(result.estimate + 1.96 * grid, grid, color="grey", lw=0.8, ls="--")
    ax.axvline(result.estimate, color="#b22222", lw=1)
    ax.scatter(yi, se, color="#1f4e79", zorder=3, s=18)
    ax.set_ylim(top, 0)
    ax.set_ylabel("standard error")
    scale = " (log)" if result.measure.is_ratio else ""
    ax.set_xlabel(f"{result.measure.value}{scale}")
    egger = f", Egger p = {result.egger.p:.3g}" if result.egger else ""
    ax.set_title(title or f"Funnel plot (k = {result.k}{egger})", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out


def km_plot(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike | None,
    path: str | Path,
    title: str | None = None,
    level: float = 0.95,
) -> Path:
    """Kaplan–Meier curves with their pointwise confidence bands, one per group."""
    t, e, g = validate_survival_data(time, event, group)
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot(1, 1, 1)
    labels = ["all"] if g is None else sorted(set(g.tolist()))
    for lab in labels:
        mask = np.ones(t.size, dtype=bool) if g is None else g == lab
        kmf = KaplanMeierFitter(alpha=1 - level).fit(t[mask], e[mask], label=f"{lab} (n={int(mask.sum())})")
        kmf.plot_survival_function(ax=ax, ci_show=True)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_title(title or "Kaplan–Meier", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out
