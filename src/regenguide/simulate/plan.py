"""Graft simulation of a fat-grafting plan (`regenguide.plan/1`): per-injection deposit geometry, predicted
retention with uncertainty, recommendations towards a target retained volume, and plan-check findings.

Geometry of an injection:
* `bolus_ml` given: spherical boluses of that volume (volume / bolus_ml of them);
* `passes` and `tunnel_length_mm` given: one cylindrical strand per pass, of cross-section
  volume / (passes x tunnel length);
* with a recipient thickness, the passes share the bed's cross-section (fan width x thickness); strands whose
  share is narrower than their diameter coalesce into a layer, modelled as a slab of thickness
  volume / (tunnel length x fan width) (Khouri 2014: crowding lets droplets coalesce).
Recipient capacity: bed volume = tunnel length x fan width x recipient thickness; capacity =
capacity_fraction x bed volume is the graft volume taken to raise interstitial pressure to the critical
9 mmHg (Khouri 2014). The fan width and the capacity fraction are expert opinion (labelled so in the output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from regenguide.domain.findings import Finding, Indicator, Source, Suggestion
from regenguide.domain.plan import FAT_MODALITIES, Injection, Modality, PlanDocument
from regenguide.kb.references import EvidenceLabel, resolve
from regenguide.simulate import closed_form as cf
from regenguide.simulate.parameters import (
    EVIDENCE_RANK,
    GraftKnowledge,
    ModelParameters,
    load_graft_knowledge,
    nominal_parameters,
    sample_parameters,
    unverified_parameters,
)
from regenguide.simulate.retention import DISCLAIMER, closed_form_zones, retained_fraction, take_multiplier

SOURCE = Source(label="RegenGuide graft survival simulator")

CITE_ZONES = ["graft.eto-2012", "graft.carpaneda-1993", "graft.khouri-2014-diffusion"]
CITE_MODEL = CITE_ZONES + [
    "graft.pasarica-2009",
    "graft.lv-2021",
    "graft.o2-solubility",
    "graft.expert-opinion",
]
CITE_CAPACITY = [
    "graft.khouri-2014-diffusion",
    "graft.khouri-2014-megavolume",
    "graft.delvecchio-2014",
    "graft.carpaneda-1992",
    "graft.expert-opinion",
]


class Recommendation(BaseModel):
    """What reaches the target with deposits that stay in the survival zone (nominal parameters)."""

    passes: int | None = Field(
        default=None, description="passes so that strands stay within the survival zone"
    )
    max_strand_diameter_mm: float
    max_bolus_ml: float
    expected_retention: float = Field(description="retention with the recommended geometry")
    target_retained_ml: float | None = None
    inject_ml: float | None = Field(default=None, description="volume to inject to retain the target")
    overcorrection_percent: float | None = None
    sessions: int = 1
    volume_per_session_ml: float | None = None
    session_interval_days: float | None = None


class InjectionPrediction(BaseModel):
    index: int
    region: str
    side: str
    geometry: str | None = None
    deposit_diameter_mm: float | None = Field(
        default=None, description="strand/bolus diameter or layer thickness"
    )
    deposits: float | None = Field(default=None, description="number of strands (passes) or boluses")
    critical_size_mm: float | None = None
    volume_ml: float | None = None
    predicted_retention: float | None = None
    retention_interval: tuple[float, float] | None = None
    predicted_retained_ml: float | None = None
    survival_fraction: float | None = None
    regenerating_fraction: float | None = None
    necrotic_fraction: float | None = None
    graft_to_capacity_ratio: float | None = None
    interstitial_pressure_mmhg: float | None = None
    coalesced: bool = False
    recommendation: Recommendation | None = None
    note: str | None = None


class PlanPrediction(BaseModel):
    modality: str
    processing: str
    obese: bool
    injections: list[InjectionPrediction]
    injected_ml: float
    predicted_retained_ml: float
    predicted_retention: float | None
    retention_interval: tuple[float, float] | None
    retained_interval_ml: tuple[float, float] | None
    interval_level: float
    draws: int
    target_retained_ml: float | None = None
    findings: list[Finding]
    unverified_parameters: list[str]
    citations: list[str]
    disclaimer: str = DISCLAIMER


def weakest_evidence(citations: list[str]) -> str:
    refs = resolve(citations, "graft findings")
    worst = max((r.evidence for r in refs), key=lambda e: EVIDENCE_RANK[e], default=EvidenceLabel.verified)
    return worst.value


def _finding(
    rule: str,
    indicator: Indicator,
    summary: str,
    detail: str,
    citations: list[str],
    index: int | None = None,
    suggestions: list[Suggestion] | None = None,
) -> Finding:
    if len(summary) > 139:
        summary = summary[:136] + "..."
    return Finding(
        rule=f"graft.{rule}",
        indicator=indicator,
        summary=summary,
        detail=detail,
        source=SOURCE,
        citations=citations,
        injection_index=index,
        suggestions=suggestions or [],
        evidence=weakest_evidence(citations),
    )


def _is_obese(plan: PlanDocument, kb: GraftKnowledge) -> bool:
    bmi = plan.patient.bmi
    return bmi is not None and bmi >= kb.value("overweight_bmi")


@dataclass(frozen=True)
class Deposit:
    geometry: str
    radius_cm: float  # strand/bolus radius or half the layer thickness
    count: float  # strands (passes) or boluses
    coalesced: bool = False


def _deposit(inj: Injection, kb: GraftKnowledge) -> Deposit | None:
    """Deposit geometry of one injection (cm), or None when the plan does not say enough."""
    volume = inj.volume_ml
    if not volume:
        return None
    fan = kb.value("fan_width_over_tunnel_length")
    if inj.bolus_ml:
        radius = (3.0 * inj.bolus_ml / (4.0 * math.pi)) ** (1.0 / 3.0)
        return Deposit("sphere", radius, volume / inj.bolus_ml)
    if inj.passes and inj.tunnel_length_mm:
        length = inj.tunnel_length_mm / 10.0
        area = volume / (inj.passes * length)
        radius = math.sqrt(area / math.pi)
        width = fan * length
        if inj.recipient_thickness_mm:
            # Passes spread over the bed's cross-section (fan width x thickness, several planes): each strand
            # owns a square cell; strands touch when the cell side is below their diameter (graft fraction
            # above pi/4).
            spacing = math.sqrt(width * inj.recipient_thickness_mm / 10.0 / inj.passes)
            if spacing < 2.0 * radius:
                thickness = volume / (length * width)
                return Deposit("slab", thickness / 2.0, 1.0, coalesced=True)
        return Deposit("cylinder", radius, float(inj.passes))
    return None


def _survival_radius(geometry: str, p: ModelParameters) -> float:
    """Largest half-size whose centre stays above the adipocyte threshold (nominal, zero-order)."""
    m = cf.exponent(geometry)
    alpha = p.solubility_mol_cm3_mmhg
    dc = alpha * (p.boundary_po2_mmhg - p.adipocyte_threshold_mmhg)
    return math.sqrt(max(2.0 * (m + 1) * p.diffusivity_cm2_s * dc / p.consumption_mol_cm3_s, 0.0))


def predict_plan(
    plan: PlanDocument,
    *,
    target_retained_ml: float | None = None,
    processing: str = "unspecified",
    draws: int = 2000,
    interval: float = 0.90,
    seed: int | None = 0,
    knowledge: GraftKnowledge | None = None,
) -> PlanPrediction:
    """Predict retention per injection and for the plan; recommend passes, aliquot size, overcorrection and
    staging towards `target_retained_ml` (the whole plan's target, shared in proportion to planned
    volumes)."""
    kb = knowledge or load_graft_knowledge()
    if plan.modality not in FAT_MODALITIES:
        raise ValueError(
            f"the graft simulator applies to fat grafts (microfat, nanofat, cal), not {plan.modality}"
        )
    if processing not in kb.processing:
        raise ValueError(f"unknown processing {processing!r}; use one of {sorted(kb.processing)}")
    modality = plan.modality.value
    obese = _is_obese(plan, kb)
    sampled = sample_parameters(draws, seed=seed, knowledge=kb, obese=obese)
    mult_draw = np.broadcast_to(
        take_multiplier(modality, processing, sampled["cal_retention_factor"], kb), (draws,)
    )
    mult_draw = mult_draw[:, None]
    nanofat = plan.modality is Modality.nanofat
    findings: list[Finding] = []
    predictions: list[InjectionPrediction] = []
    deposits: list[tuple[int, Deposit, str]] = []
    for i, inj in enumerate(plan.injections):
        pred = InjectionPrediction(index=i, region=inj.region, side=inj.side.value, volume_ml=inj.volume_ml)
        dep = _deposit(inj, kb)
        if dep is None:
            pred.note = "not simulated: give volume_ml and either bolus_ml or passes with tunnel_length_mm"
            findings.append(
                _finding(
                    "geometry_missing",
                    Indicator.info,
                    f"Injection {i} ({inj.region}): graft retention not predicted (no deposit geometry)",
                    "The simulator needs volume_ml and either bolus_ml, or passes and tunnel_length_mm, to "
                    "derive "
                    "the strand or bolus size.",
                    CITE_ZONES,
                    i,
                )
            )
        else:
            deposits.append((i, dep, inj.recipient_perfusion or "normal"))
        predictions.append(pred)

    # Monte Carlo over all deposits at once: one column per deposit, grouped by geometry (at most 3 groups).
    retained_draws = np.zeros((draws, len(plan.injections)))
    volumes = np.array([inj.volume_ml or 0.0 for inj in plan.injections])
    for geometry in ("cylinder", "sphere", "slab"):
        group = [(i, d, perf) for i, d, perf in deposits if d.geometry == geometry]
        if not group:
            continue
        idx = np.array([i for i, _, _ in group])
        radii = np.array([d.radius_cm for _, d, _ in group], dtype=float)[None, :]
        factor = np.array([kb.perfusion_po2_factor[perf].value for _, _, perf in group])[None, :]  # type: ignore[index]
        col = {k: v[:, None] for k, v in sampled.items()}
        col["boundary_po2_mmhg"] = col["boundary_po2_mmhg"] * factor
        zones = closed_form_zones(geometry, radii, col)
        retained_draws[:, idx] = retained_fraction(
            zones["fractions"],
            take_survival=col["take_survival"],
            take_regenerating=col["take_regenerating"],
            multiplier=mult_draw,
            nanofat=nanofat,
        )

    tail = 100 * (1 - interval) / 2
    planned_total = float(volumes.sum())
    simulated_idx = [i for i, _, _ in deposits]
    share = {i: float(volumes[i] / planned_total) if planned_total else 0.0 for i in simulated_idx}
    for i, dep, perf in deposits:
        inj = plan.injections[i]
        pred = predictions[i]
        p = nominal_parameters(kb, obese=obese, perfusion=perf)
        geometry = dep.geometry
        radius = dep.radius_cm
        zones = closed_form_zones(geometry, radius, p)
        fr = {k: float(np.asarray(v).reshape(-1)[0]) for k, v in zones["fractions"].items()}
        mult = float(take_multiplier(modality, processing, p.cal_retention_factor, kb))
        nominal = float(
            retained_fraction(
                {k: np.asarray(v) for k, v in fr.items()},
                take_survival=p.take_survival,
                take_regenerating=p.take_regenerating,
                multiplier=mult,
                nanofat=nanofat,
            )
        )
        lo, hi = np.percentile(retained_draws[:, i], [tail, 100 - tail])
        critical = 2.0 * float(
            cf.critical_radius(geometry, p.diffusivity_cm2_s, p.c0, p.consumption_mol_cm3_s)
        )
        pred.geometry = geometry
        pred.deposit_diameter_mm = 20.0 * radius
        pred.deposits = dep.count
        pred.coalesced = dep.coalesced
        pred.critical_size_mm = 10.0 * critical
        pred.predicted_retention = nominal
        pred.retention_interval = (float(lo), float(hi))
        pred.predicted_retained_ml = nominal * float(inj.volume_ml or 0.0)
        pred.survival_fraction, pred.regenerating_fraction, pred.necrotic_fraction = (
            fr["survival"],
            fr["regenerating"],
            fr["necrotic"],
        )
        capacity_ml = None
        if inj.tunnel_length_mm and inj.recipient_thickness_mm:
            length = inj.tunnel_length_mm / 10.0
            bed = (
                length * kb.value("fan_width_over_tunnel_length") * length * inj.recipient_thickness_mm / 10.0
            )
            capacity_ml = kb.value("capacity_fraction") * bed
            pred.graft_to_capacity_ratio = float(inj.volume_ml or 0.0) / capacity_ml
            # Linear compliance up to the critical pressure (expert opinion): ratio 1 <-> 9 mmHg.
            pred.interstitial_pressure_mmhg = pred.graft_to_capacity_ratio * kb.value("critical_ifp_mmhg")
        pred.recommendation = _recommend(
            inj,
            p,
            kb,
            modality,
            processing,
            nanofat,
            capacity_ml,
            None if target_retained_ml is None else target_retained_ml * share[i],
        )
        findings += _injection_findings(i, inj, pred, kb)

    # Plan totals (only simulated injections count).
    sim_vol = volumes[simulated_idx] if simulated_idx else np.zeros(0)
    retained_ml = float(sum(predictions[i].predicted_retained_ml or 0.0 for i in simulated_idx))
    plan_ret = plan_int = ret_int_ml = None
    if simulated_idx and sim_vol.sum() > 0:
        per_draw_ml = retained_draws[:, simulated_idx] @ sim_vol
        lo_ml, hi_ml = np.percentile(per_draw_ml, [tail, 100 - tail])
        plan_ret = retained_ml / float(sim_vol.sum())
        plan_int = (float(lo_ml / sim_vol.sum()), float(hi_ml / sim_vol.sum()))
        ret_int_ml = (float(lo_ml), float(hi_ml))
        findings += _plan_findings(
            plan, predictions, plan_ret, plan_int, retained_ml, target_retained_ml, kb, nanofat
        )
    citations = sorted({c for f in findings for c in f.citations} | set(CITE_MODEL))
    return PlanPrediction(
        modality=modality,
        processing=processing,
        obese=obese,
        injections=predictions,
        injected_ml=planned_total,
        predicted_retained_ml=retained_ml,
        predicted_retention=plan_ret,
        retention_interval=plan_int,
        retained_interval_ml=ret_int_ml,
        interval_level=interval,
        draws=draws,
        target_retained_ml=target_retained_ml,
        findings=findings,
        unverified_parameters=unverified_parameters(kb),
        citations=resolve_ids(citations),
    )


def resolve_ids(ids: list[str]) -> list[str]:
    resolve(ids, "graft plan prediction")
    return ids


def _recommend(
    inj: Injection,
    p: ModelParameters,
    kb: GraftKnowledge,
    modality: str,
    processing: str,
    nanofat: bool,
    capacity_ml: float | None,
    target_ml: float | None,
) -> Recommendation:
    """Deposits small enough to stay wholly in the survival zone, capped by the published maxima (threads
    <= 3.0 mm, Carpaneda 1992; lobule radius <= 2 mm, Khouri 2014), then volume and sessions for the
    target."""
    r_cyl = min(_survival_radius("cylinder", p), kb.value("max_thread_diameter_mm") / 20.0)
    r_sph = min(_survival_radius("sphere", p), kb.value("max_lobule_radius_mm") / 10.0)
    max_bolus = 4.0 / 3.0 * math.pi * r_sph**3
    passes = None
    volume = float(inj.volume_ml or 0.0)
    if inj.bolus_ml:
        geometry, radius = "sphere", min((3.0 * inj.bolus_ml / (4.0 * math.pi)) ** (1.0 / 3.0), r_sph)
    else:
        geometry, radius = "cylinder", r_cyl
        if inj.tunnel_length_mm and volume > 0:
            passes = max(
                inj.passes or 1, math.ceil(volume / (inj.tunnel_length_mm / 10.0 * math.pi * r_cyl**2))
            )
            radius = math.sqrt(volume / (passes * inj.tunnel_length_mm / 10.0) / math.pi)
    zones = closed_form_zones(geometry, radius, p)
    mult = float(take_multiplier(modality, processing, p.cal_retention_factor, kb))
    expected = float(
        retained_fraction(
            zones["fractions"],
            take_survival=p.take_survival,
            take_regenerating=p.take_regenerating,
            multiplier=mult,
            nanofat=nanofat,
        ).reshape(-1)[0]
    )
    rec = Recommendation(
        passes=passes,
        max_strand_diameter_mm=20.0 * r_cyl,
        max_bolus_ml=max_bolus,
        expected_retention=expected,
    )
    inject = volume
    if target_ml is not None and expected > 0:
        inject = target_ml / expected
        rec.target_retained_ml = target_ml
        rec.inject_ml = inject
        rec.overcorrection_percent = 100.0 * (inject / target_ml - 1.0) if target_ml > 0 else None
        if passes is not None and inj.tunnel_length_mm:
            rec.passes = max(1, math.ceil(inject / (inj.tunnel_length_mm / 10.0 * math.pi * r_cyl**2)))
    if capacity_ml is not None and capacity_ml > 0 and inject > capacity_ml:
        rec.sessions = math.ceil(inject / capacity_ml)
        rec.volume_per_session_ml = inject / rec.sessions
        rec.session_interval_days = kb.value("session_interval_days")
        if rec.passes is not None and inj.tunnel_length_mm:
            rec.passes = max(
                1, math.ceil(rec.volume_per_session_ml / (inj.tunnel_length_mm / 10.0 * math.pi * r_cyl**2))
            )
    return rec


def _injection_findings(
    i: int, inj: Injection, pred: InjectionPrediction, kb: GraftKnowledge
) -> list[Finding]:
    out: list[Finding] = []
    rec = pred.recommendation
    where = f"Injection {i} ({inj.region})"
    d = pred.deposit_diameter_mm or 0.0
    if pred.coalesced:
        out.append(
            _finding(
                "crowding",
                Indicator.warning,
                f"{where}: {inj.passes} strands of {d:.1f} mm do not fit apart in the recipient bed; "
                "they coalesce",
                f"Strands of {d:.1f} mm merge into a layer (modelled as a slab), which lengthens the "
                "diffusion "
                "distance (Khouri 2014). Spread the fan, add tunnels or stage the volume.",
                ["graft.khouri-2014-megavolume", "graft.khouri-2014-diffusion", "graft.expert-opinion"],
                i,
            )
        )
    if (pred.necrotic_fraction or 0.0) > 0.01:
        suggestions = []
        if rec is not None and rec.passes is not None:
            suggestions.append(
                Suggestion(label=f"Use {rec.passes} passes (thinner strands)", changes={"passes": rec.passes})
            )
        if inj.bolus_ml and rec is not None:
            suggestions.append(
                Suggestion(
                    label=f"Use aliquots of at most {rec.max_bolus_ml:.3f} mL",
                    changes={"bolus_ml": round(rec.max_bolus_ml, 3)},
                )
            )
        kind = "boluses" if pred.geometry == "sphere" else ("layer" if pred.coalesced else "strands")
        out.append(
            _finding(
                "necrotic_core",
                Indicator.warning,
                f"{where}: {d:.1f} mm {kind} exceed the {pred.critical_size_mm or 0:.1f} mm critical size; "
                f"{100 * (pred.necrotic_fraction or 0):.0f}% central necrosis predicted",
                "Beyond the critical size the core of the deposit has no oxygen and dies (oil cysts, "
                "calcification). Published limits: viable rim 1.5 +/- 0.5 mm (Carpaneda 1993), "
                "radius > 0.16 cm "
                "predicts central necrosis (Khouri 2014), threads <= 3 mm (Carpaneda 1992).",
                CITE_ZONES + ["graft.carpaneda-1992", "graft.o2-solubility"],
                i,
                suggestions,
            )
        )
    if (
        inj.bolus_ml
        and pred.deposit_diameter_mm
        and pred.deposit_diameter_mm / 2 > kb.value("max_lobule_radius_mm")
    ):
        out.append(
            _finding(
                "bolus_too_large",
                Indicator.warning,
                f"{where}: bolus radius {pred.deposit_diameter_mm / 2:.1f} mm exceeds the 2 mm lobule limit",
                "Khouri 2014 (letter reply) advises avoiding lobules with a radius above 2 mm.",
                ["graft.khouri-2014-diffusion"],
                i,
                [Suggestion(label="Smaller aliquots", changes={"bolus_ml": round(rec.max_bolus_ml, 3)})]
                if rec
                else [],
            )
        )
    if inj.recipient_thickness_mm and d > inj.recipient_thickness_mm:
        out.append(
            _finding(
                "strand_exceeds_bed",
                Indicator.warning,
                f"{where}: {d:.1f} mm deposits are thicker than the {inj.recipient_thickness_mm:.1f} mm "
                "recipient bed",
                "The deposit cannot be surrounded by recipient tissue; use thinner strands or more passes.",
                CITE_ZONES + ["graft.expert-opinion"],
                i,
            )
        )
    if pred.graft_to_capacity_ratio is not None and pred.graft_to_capacity_ratio > 1.0 and rec is not None:
        out.append(
            _finding(
                "capacity_exceeded",
                Indicator.warning,
                f"{where}: graft-to-capacity ratio {pred.graft_to_capacity_ratio:.2f} (pressure ~"
                f"{pred.interstitial_pressure_mmhg or 0:.0f} mmHg > 9); "
                f"stage in {max(rec.sessions, 2)} sessions",
                "Crowding raises interstitial fluid pressure above the critical 9 mmHg and lowers retention "
                "(Khouri 2014; Del Vecchio 2014). The bed capacity estimate is expert opinion. "
                "Sessions about 35 "
                "days apart (Carpaneda).",
                CITE_CAPACITY,
                i,
                [
                    Suggestion(
                        label=f"Stage: {max(rec.sessions, 2)} sessions, "
                        f"{kb.value('session_interval_days'):.0f} days apart",
                        changes={
                            "volume_ml": round(
                                float(rec.volume_per_session_ml or (inj.volume_ml or 0) / 2), 2
                            )
                        },
                    )
                ],
            )
        )
    return out


def _plan_findings(
    plan: PlanDocument,
    predictions: list[InjectionPrediction],
    retention: float,
    interval: tuple[float, float],
    retained_ml: float,
    target_ml: float | None,
    kb: GraftKnowledge,
    nanofat: bool,
) -> list[Finding]:
    out: list[Finding] = []
    lo, hi = interval
    detail = (
        f"Predicted retained volume {retained_ml:.1f} mL. Published facial retention: pooled 47% "
        "(95% CI 41-53%), "
        "range 26-83% (Lv 2021). " + DISCLAIMER
    )
    suggestions: list[Suggestion] = []
    if target_ml is not None:
        inject = sum(p.recommendation.inject_ml or 0.0 for p in predictions if p.recommendation)
        sessions = max((p.recommendation.sessions for p in predictions if p.recommendation), default=1)
        detail += f" To retain {target_ml:.1f} mL: inject about {inject:.1f} mL in {sessions} session(s)."
        suggestions.append(Suggestion(label=f"Inject {inject:.1f} mL in {sessions} session(s)", changes={}))
    out.append(
        _finding(
            "retention_summary",
            Indicator.info,
            f"Predicted graft retention {100 * retention:.0f}% ({100 * lo:.0f}-{100 * hi:.0f}%), "
            f"{retained_ml:.1f} mL retained",
            detail,
            CITE_MODEL,
            None,
            suggestions,
        )
    )
    low = kb.anchors["facial_retention"].low
    if low is not None and retention < low:
        out.append(
            _finding(
                "low_retention",
                Indicator.warning,
                f"Predicted retention {100 * retention:.0f}% is below the published facial range (26-83%)",
                "Large deposits lose their core; see the per-injection findings for thinner strands or "
                "smaller "
                "aliquots.",
                ["graft.lv-2021"] + CITE_ZONES,
            )
        )
    if nanofat:
        out.append(
            _finding(
                "nanofat_not_volumizing",
                Indicator.info,
                "Nanofat has no viable adipocytes; its volume prediction counts regeneration only",
                "Nanofat keeps adipose stem cells but no viable adipocytes (Tonnard 2013); it is used for "
                "skin "
                "quality rather than volume.",
                ["graft.tonnard-2013"],
            )
        )
    return out


class PlanPredictionRequest(BaseModel):
    """Request body for a plan prediction (the HTTP API and the CLI share it)."""

    model_config = ConfigDict(extra="forbid")

    plan: PlanDocument
    target_retained_ml: float | None = Field(default=None, gt=0, le=5000)
    processing: str = "unspecified"
    draws: int = Field(default=2000, ge=10, le=200_000)
    interval: float = Field(default=0.90, gt=0, lt=1)
    seed: int | None = 0


def predict_plan_request(req: PlanPredictionRequest) -> PlanPrediction:
    return predict_plan(
        req.plan,
        target_retained_ml=req.target_retained_ml,
        processing=req.processing,
        draws=req.draws,
        interval=req.interval,
        seed=req.seed,
    )


def graft_findings(plan: PlanDocument) -> list[Finding]:
    """Findings of the graft simulator for the plan check (empty for non-fat modalities)."""
    if plan.modality not in FAT_MODALITIES:
        return []
    return predict_plan(plan).findings
