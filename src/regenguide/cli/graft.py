"""`regenguide graft …`: the graft survival simulator (thin CLI: parse, call the model, render)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from pydantic import ValidationError

app = typer.Typer(
    help="Fat-graft survival simulator: O2 diffusion, zones, predicted retention (model predictions).",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


@app.command("simulate")
def simulate_cmd(
    geometry: str = typer.Option(..., "--geometry", help="slab | cylinder (strand) | sphere (bolus)"),
    diameter_mm: float = typer.Option(
        ..., "--diameter-mm", help="strand/bolus diameter or slab thickness, mm"
    ),
    kinetics: str = typer.Option("zero", "--kinetics", help="zero (zero-order) | mm (Michaelis-Menten)"),
    diffusivity: float = typer.Option(None, "--diffusivity-cm2-s", help="O2 diffusivity override, cm^2/s"),
    boundary_po2: float = typer.Option(
        None, "--boundary-po2-mmhg", help="recipient-tissue pO2 override, mmHg"
    ),
    consumption: float = typer.Option(None, "--consumption-mol-cm3-s", help="O2 consumption override"),
    solubility: float = typer.Option(None, "--solubility-mol-cm3-mmhg", help="O2 solubility override"),
    obese: bool = typer.Option(False, "--obese", help="overweight/obese recipient (lower pO2)"),
    perfusion: str = typer.Option(None, "--perfusion", help="recipient perfusion: low | normal | high"),
    modality: str = typer.Option("microfat", "--modality", help="microfat | nanofat | cal"),
    processing: str = typer.Option(
        "unspecified", "--processing", help="unspecified|cotton_pad|centrifugation|sedimentation"
    ),
    draws: int = typer.Option(2000, "--draws", help="Monte Carlo draws (Michaelis-Menten: at most 200)"),
    seed: int = typer.Option(0, "--seed"),
    plot: Path = typer.Option(None, "--plot", help="write a PNG of the O2 profile with its zones"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable JSON"),
) -> None:
    """Critical size, zones and predicted retention of one deposit."""
    from regenguide.kb.references import KnowledgeBaseError
    from regenguide.simulate.oxygen import SolverError
    from regenguide.simulate.retention import SimulationRequest, simulate

    try:
        req = SimulationRequest(
            geometry=geometry,  # type: ignore[arg-type]
            diameter_mm=diameter_mm,
            kinetics=kinetics,  # type: ignore[arg-type]
            diffusivity_cm2_s=diffusivity,
            boundary_po2_mmhg=boundary_po2,
            consumption_mol_cm3_s=consumption,
            solubility_mol_cm3_mmhg=solubility,
            obese=obese,
            perfusion=perfusion,  # type: ignore[arg-type]
            modality=modality,  # type: ignore[arg-type]
            processing=processing,
            draws=draws,
            seed=seed,
        )
    except ValidationError as exc:
        raise _fail(_validation_message(exc)) from None
    try:
        result = simulate(req)
    except (ValueError, SolverError, KnowledgeBaseError) as exc:
        raise _fail(str(exc)) from None
    if plot is not None:
        import numpy as np

        from regenguide.simulate.plot import plot_radial

        thresholds = {p.name: p.value for p in result.parameters}
        profile = result.po2_profile or {"r_mm": [], "po2_mmhg": []}
        try:
            plot_radial(
                np.asarray(profile["r_mm"]),
                np.asarray(profile["po2_mmhg"]),
                geometry=result.geometry,
                adipocyte_threshold_mmhg=thresholds["adipocyte_threshold_mmhg"],
                necrosis_threshold_mmhg=thresholds["necrosis_threshold_mmhg"],
                path=plot,
            )
        except OSError as exc:
            raise _fail(f"cannot write plot {plot}: {exc}") from None
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    z = result.zones
    lo, hi = result.retention_interval
    typer.echo(f"{result.geometry} {result.diameter_mm:g} mm, {result.kinetics} kinetics (model prediction)")
    typer.echo(f"  critical size        {result.critical_size_mm:.2f} mm")
    typer.echo(f"  anoxic core          {result.anoxic_core_diameter_mm:.2f} mm")
    typer.echo(
        f"  survival zone        {z.survival_zone_mm:.2f} mm  ({100 * z.survival_fraction:.0f}% of volume)"
    )
    typer.echo(
        f"  regenerating zone    {z.regenerating_zone_mm:.2f} mm  ({100 * z.regenerating_fraction:.0f}%)"
    )
    typer.echo(
        f"  necrotic core        {z.necrotic_core_diameter_mm:.2f} mm  ({100 * z.necrotic_fraction:.0f}%)"
    )
    typer.echo(
        f"  predicted retention  {100 * result.predicted_retention:.0f}% "
        f"({100 * result.interval_level:.0f}% interval {100 * lo:.0f}-{100 * hi:.0f}%)"
    )
    typer.echo("  unverified / expert-opinion parameters:")
    for item in result.unverified_parameters:
        typer.echo(f"    - {item}")
    if plot is not None:
        typer.echo(f"  plot written to {plot}")


@app.command("plan")
def plan_cmd(
    plan_file: Path = typer.Argument(..., help="plan document (regenguide.plan/1 JSON)"),
    target_ml: float = typer.Option(None, "--target-ml", help="volume the whole plan should retain, mL"),
    processing: str = typer.Option(
        "unspecified", "--processing", help="unspecified|cotton_pad|centrifugation|sedimentation"
    ),
    draws: int = typer.Option(2000, "--draws"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable JSON"),
) -> None:
    """Predicted retention per injection and for the plan, recommendations and findings."""
    from regenguide.domain.plan import PlanDocument
    from regenguide.simulate.plan import predict_plan

    try:
        raw = json.loads(plan_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(f"plan file not found: {plan_file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {plan_file}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _fail(f"{plan_file} is not valid JSON: {exc}") from None
    try:
        plan = PlanDocument.model_validate(raw)
    except ValidationError as exc:
        raise _fail(f"invalid plan document: {_validation_message(exc)}") from None
    if target_ml is not None and target_ml <= 0:
        raise _fail("--target-ml must be positive")
    if not 10 <= draws <= 200_000:
        raise _fail("--draws must be between 10 and 200000")
    try:
        pred = predict_plan(plan, target_retained_ml=target_ml, processing=processing, draws=draws, seed=seed)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(pred.model_dump_json(indent=2))
        return
    typer.echo(f"{pred.modality} plan: {pred.injected_ml:.1f} mL injected (model prediction)")
    for inj in pred.injections:
        if inj.predicted_retention is None:
            typer.echo(f"  [{inj.index}] {inj.region}: not simulated ({inj.note})")
            continue
        lo, hi = inj.retention_interval or (0.0, 0.0)
        typer.echo(
            f"  [{inj.index}] {inj.region} {inj.side}: {inj.geometry} {inj.deposit_diameter_mm:.2f} mm x "
            f"{inj.deposits:g}, retention {100 * inj.predicted_retention:.0f}% "
            f"({100 * lo:.0f}-{100 * hi:.0f}%)"
            + (f"; {inj.note}" if inj.tunnel_length_assumed and inj.note else "")
        )
    if pred.predicted_retention is not None and pred.retention_interval is not None:
        lo, hi = pred.retention_interval
        typer.echo(
            f"  plan: {100 * pred.predicted_retention:.0f}% ({100 * lo:.0f}-{100 * hi:.0f}%), "
            f"{pred.predicted_retained_ml:.1f} mL retained"
        )
    for f in pred.findings:
        typer.echo(f"  {f.indicator.value:8s} {f.rule}: {f.summary} [{f.evidence}]")
    typer.echo("  unverified / expert-opinion parameters:")
    for item in pred.unverified_parameters:
        typer.echo(f"    - {item}")


@app.command("parameters")
def parameters_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Model parameters with values, ranges, evidence labels and citations."""
    from regenguide.simulate.parameters import parameter_report

    rows = parameter_report()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(
            f"{row['name']:32s} {row['nominal']:<10.4g} [{row['low']:.4g}, {row['high']:.4g}] "
            f"{row['unit']:18s} "
            f"{row['evidence']}"
        )


@app.command("section")
def section_cmd(
    strands: int = typer.Option(3, "--strands", help="number of parallel strands in one row"),
    diameter_mm: float = typer.Option(..., "--diameter-mm", help="strand diameter, mm"),
    spacing_mm: float = typer.Option(
        None, "--spacing-mm", help="centre-to-centre spacing (default 2 x diameter)"
    ),
    bed_thickness_mm: float = typer.Option(..., "--bed-thickness-mm", help="recipient bed thickness, mm"),
    perfusion: str = typer.Option("normal", "--perfusion", help="low | normal | high"),
    kinetics: str = typer.Option("zero", "--kinetics", help="zero | mm"),
    obese: bool = typer.Option(False, "--obese"),
    plot: Path = typer.Option(None, "--plot", help="write a PNG of the 2-D O2 field with zones"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """2-D cross-section: several strands in a perfused recipient bed."""
    from regenguide.simulate.bed import CrossSectionRequest, simulate_cross_section
    from regenguide.simulate.oxygen import SolverError

    try:
        req = CrossSectionRequest(
            strands=strands,
            diameter_mm=diameter_mm,
            spacing_mm=spacing_mm,
            bed_thickness_mm=bed_thickness_mm,
            perfusion=perfusion,  # type: ignore[arg-type]
            kinetics=kinetics,  # type: ignore[arg-type]
            obese=obese,
        )
    except ValidationError as exc:
        raise _fail(_validation_message(exc)) from None
    try:
        result, section = simulate_cross_section(req)
    except (ValueError, SolverError) as exc:
        raise _fail(str(exc)) from None
    if plot is not None:
        from regenguide.simulate.parameters import nominal_parameters
        from regenguide.simulate.plot import plot_cross_section

        p = nominal_parameters(obese=obese)
        try:
            plot_cross_section(
                section,
                solubility=p.solubility_mol_cm3_mmhg,
                adipocyte_threshold_mmhg=p.adipocyte_threshold_mmhg,
                necrosis_threshold_mmhg=p.necrosis_threshold_mmhg,
                path=plot,
            )
        except OSError as exc:
            raise _fail(f"cannot write plot {plot}: {exc}") from None
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(f"{strands} strands of {diameter_mm:g} mm in a {bed_thickness_mm:g} mm bed (model prediction)")
    for i, s in enumerate(result.strands):
        typer.echo(
            f"  strand {i}: survival {100 * s.survival_fraction:.0f}%, regenerating "
            f"{100 * s.regenerating_fraction:.0f}%, necrotic {100 * s.necrotic_fraction:.0f}%, "
            f"retention {100 * s.retention:.0f}%"
        )
    typer.echo(
        f"  mean retention {100 * result.predicted_retention:.0f}% (isolated strand "
        f"{100 * result.isolated_strand_retention:.0f}%); lowest pO2 {result.min_po2_mmhg:.1f} mmHg"
    )


@app.command("days")
def days_cmd(
    geometry: str = typer.Option(..., "--geometry", help="slab | cylinder | sphere"),
    diameter_mm: float = typer.Option(..., "--diameter-mm"),
    hours: float = typer.Option(96.0, "--hours", help="simulated time after grafting"),
    revascularization: float = typer.Option(
        None,
        "--revascularization-um-per-day",
        help="speed of the revascularisation front (unverified; default 0)",
    ),
    obese: bool = typer.Option(False, "--obese"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The first days: hypoxic death of adipocytes (day 1) and ASCs (day 3) in time."""
    from regenguide.simulate.bed import DaysRequest, simulate_first_days
    from regenguide.simulate.oxygen import SolverError

    try:
        req = DaysRequest(
            geometry=geometry,  # type: ignore[arg-type]
            diameter_mm=diameter_mm,
            hours=hours,
            revascularization_um_per_day=revascularization,
            obese=obese,
        )
        result = simulate_first_days(req)
    except ValidationError as exc:
        raise _fail(_validation_message(exc)) from None
    except (ValueError, SolverError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(f"{geometry} {diameter_mm:g} mm after {hours:g} h (model prediction)")
    typer.echo(
        f"  survival {100 * result.survival_fraction:.0f}%, "
        f"regenerating {100 * result.regenerating_fraction:.0f}%, "
        f"necrotic {100 * result.necrotic_fraction:.0f}%"
    )


@app.command("calibrate")
def calibrate_cmd(
    observations_file: Path = typer.Argument(
        ..., help="JSON list of observations (geometry, diameter_mm, ...)"
    ),
    fit: str = typer.Option(
        "consumption_mol_cm3_s,take_survival,take_regenerating", "--fit", help="comma-separated parameters"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fit the uncertain parameters to observed retention; report the fit and its residuals."""
    from regenguide.simulate.calibration import calibrate

    try:
        data = json.loads(observations_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(f"file not found: {observations_file}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(f"cannot read {observations_file}: {exc}") from None
    if not isinstance(data, list):
        raise _fail("observations must be a JSON list")
    try:
        result = calibrate(data, fit=[f.strip() for f in fit.split(",") if f.strip()])
    except ValidationError as exc:
        raise _fail(f"invalid observation: {_validation_message(exc)}") from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(f"fitted on {result.n} observations (RMSE {result.rmse:.3f}, converged {result.converged})")
    for name, value in result.fitted.items():
        se = result.standard_errors.get(name)
        typer.echo(f"  {name:28s} {value:.4g}" + (f" +/- {se:.2g}" if se is not None else ""))
