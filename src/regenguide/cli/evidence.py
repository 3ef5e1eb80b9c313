"""`regenguide meta …` and `regenguide survival …`: meta-analysis and Kaplan–Meier from CSV (thin CLI)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from regenguide.evidence.effects import Measure

if TYPE_CHECKING:
    from regenguide.evidence.meta import MetaResult
    from regenguide.evidence.survival import SurvivalResult

# The statistics modules import statsmodels/lifelines (seconds); they are imported inside the commands
# so that other `regenguide` commands start fast.
METHODS = ("FE", "DL", "REML", "PM", "MH")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _clean(value: object) -> object:
    """JSON without NaN/Infinity (they become null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _render_meta(res: MetaResult) -> str:
    ratio = res.measure.is_ratio
    scale = " (log scale)" if ratio else ""
    lines = [
        f"{res.measure.value} meta-analysis, {res.method.value}{' + Knapp–Hartung' if res.knha else ''}, k = {res.k}",
        f"estimate{scale}: {res.estimate:.4f} (SE {res.se:.4f}), {int(res.level * 100)}% CI "
        f"{res.ci_low:.4f} to {res.ci_high:.4f}, "
        + (f"t({res.df}) = {res.statistic:.3f}" if res.df is not None else f"z = {res.statistic:.3f}")
        + f", p = {res.p:.3g}",
    ]
    if res.exp is not None:
        lines.append(f"{res.measure.value}: {res.exp.estimate:.3f} ({res.exp.ci_low:.3f} to {res.exp.ci_high:.3f})")
    lines.append(
        f"heterogeneity: Q({res.q_df}) = {res.q:.3f}, p = {res.q_p:.3g}; I² = {res.i2:.2f}%; "
        f"H² = {res.h2:.2f}; τ² = {res.tau2:.4g}"
    )
    if res.k >= 3:
        if res.tau2_ci is not None:
            lines.append(f"τ² {int(res.level * 100)}% CI (Q-profile): {res.tau2_ci.low:.4g} to {res.tau2_ci.high:.4g}")
        if res.pi_low is not None and res.pi_high is not None:
            pi = f"prediction interval{scale}: {res.pi_low:.4f} to {res.pi_high:.4f}"
            if res.exp is not None and res.exp.pi_low is not None and res.exp.pi_high is not None:
                pi += f" ({res.measure.value} {res.exp.pi_low:.3f} to {res.exp.pi_high:.3f})"
            lines.append(pi)
        if res.egger is not None:
            lines.append(
                f"Egger's test: intercept {res.egger.intercept:.3f}, t({res.egger.df}) = "
                f"{res.egger.t:.3f}, p = {res.egger.p:.3g}"
            )
    corrected = [s.study for s in res.studies if s.corrected]
    if corrected:
        lines.append(f"0.5 continuity correction applied to: {', '.join(corrected)}")
    return "\n".join(lines)


def _render_survival(res: SurvivalResult) -> str:
    def num(x: float | None) -> str:
        return "not reached" if x is None else f"{x:g}"

    lines = []
    for g in res.groups:
        lines.append(
            f"{g.group}: n = {g.n}, events = {g.events}, median = {num(g.median)} "
            f"({int(res.level * 100)}% CI {num(g.median_ci_low)} to {num(g.median_ci_high)})"
        )
    if res.logrank is not None:
        lines.append(f"log-rank: χ²({res.logrank.df}) = {res.logrank.chi2:.3f}, p = {res.logrank.p:.3g}")
    return "\n".join(lines)


def meta(
    file: Path = typer.Argument(
        ...,
        help="CSV: study,treat_events,treat_total,ctrl_events,ctrl_total | "
        "study,treat_mean,treat_sd,treat_n,ctrl_mean,ctrl_sd,ctrl_n | study,yi,vi",
    ),
    measure: str = typer.Option(..., "--measure", help="RR | OR | RD | MD | SMD"),
    method: str = typer.Option("REML", "--method", help="FE | DL | REML | PM (or MH for binary measures)"),
    knha: bool = typer.Option(False, "--knha", help="Knapp–Hartung adjustment (random-effects models)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable JSON"),
    plot: Path | None = typer.Option(None, "--plot", help="write a forest plot (PNG) here"),
    funnel: Path | None = typer.Option(None, "--funnel", help="write a funnel plot (PNG) here"),
) -> None:
    """Meta-analysis of study-level data (effect sizes as metafor's escalc; models as rma)."""
    m = measure.strip().upper()
    if m not in {x.value for x in Measure if x is not Measure.GEN}:
        raise _fail(f"--measure must be one of RR, OR, RD, MD, SMD (got {measure!r})")
    from regenguide.evidence.io import EvidenceInputError, effects_from_frame, read_csv
    from regenguide.evidence.meta import MetaAnalysisError, meta_analysis

    meth = method.strip().upper()
    if meth not in METHODS:
        raise _fail(f"--method must be one of FE, DL, REML, PM, MH (got {method!r})")
    try:
        es = effects_from_frame(read_csv(file), m)
        res = meta_analysis(es, meth, knha=knha)
    except (EvidenceInputError, MetaAnalysisError) as exc:
        raise _fail(f"{file.name}: {exc}") from None
    try:
        if plot is not None:
            from regenguide.evidence.plots import forest_plot

            forest_plot(res, plot)
        if funnel is not None:
            from regenguide.evidence.plots import funnel_plot

            funnel_plot(res, funnel)
    except OSError as exc:
        raise _fail(f"cannot write plot: {exc}") from None
    if as_json:
        typer.echo(json.dumps(_clean(res.to_json_dict()), ensure_ascii=False))
    else:
        typer.echo(_render_meta(res))


def survival(
    file: Path = typer.Argument(..., help="CSV with one row per patient or procedure"),
    time: str = typer.Option(..., "--time", help="column with the follow-up time"),
    event: str = typer.Option(..., "--event", help="column with 1 = event, 0 = censored"),
    group: str | None = typer.Option(None, "--group", help="column to compare groups by (log-rank)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable JSON"),
    plot: Path | None = typer.Option(None, "--plot", help="write Kaplan–Meier curves (PNG) here"),
) -> None:
    """Kaplan–Meier medians per group and the log-rank test (lifelines)."""
    from regenguide.evidence.io import EvidenceInputError, read_csv, survival_from_frame
    from regenguide.evidence.survival import kaplan_meier

    try:
        t, e, g = survival_from_frame(read_csv(file), time, event, group)
        res = kaplan_meier(t, e, g)
    except (EvidenceInputError, ValueError) as exc:
        raise _fail(f"{file.name}: {exc}") from None
    if plot is not None:
        from regenguide.evidence.plots import km_plot

        try:
            km_plot(t, e, g, plot)
        except OSError as exc:
            raise _fail(f"cannot write plot: {exc}") from None
    if as_json:
        typer.echo(json.dumps(_clean(res.to_json_dict()), ensure_ascii=False))
    else:
        typer.echo(_render_survival(res))


def register(app: typer.Typer) -> None:
    app.command("meta")(meta)
    app.command("survival")(survival)
