"""Graft simulation of a fat-grafting plan (`regenguide.plan/1`): per-injection deposit geometry, predicted
retention with uncertainty, recommendations towards a target retained volume, and plan-check findings.

Geometry of an injection (one deposit shape per injection; strands are cylinders, boluses spheres):
* `passes` and `tunnel_length_mm` given: one strand per pass, of cross-section volume / (passes x length);
* a cannula with an aliquot (`bolus_ml`) or `passes` but no `passes`+`tunnel_length_mm` pair: the fat is
  threaded retrograde along the tunnel as the cannula is withdrawn (Coleman technique; threads, Carpaneda
  1992; microribbons, Khouri 2014), so each aliquot (or volume / passes) is a strand along the tunnel;
  without `tunnel_length_mm` the knowledge base's `default_tunnel_length_mm` is used, an explicitly
  labelled assumption (expert opinion) that the prediction reports (`tunnel_length_assumed`). A "strand"
  shorter than it is thick is a compact deposit and is modelled as a sphere;
* `bolus_ml` with a needle or no device given: a true bolus, spheres of that volume (volume / bolus_ml);
* with a recipient thickness, the strands share the bed's cross-section (fan width x thickness); strands
  whose share is narrower than their diameter coalesce into a layer, modelled as a slab of thickness
  volume / (tunnel length x fan width) (Khouri 2014: crowding lets droplets coalesce).
Recipient capacity: bed volume = tunnel length x fan width x recipient thickness; capacity =
capacity_fraction x bed volume is the graft volume taken to raise interstitial pressure to the critical
9 mmHg (Khouri 2014). The fan width and the capacity fraction are expert opinion (labelled so in the output).

Speed: deposits are deduplicated and evaluated together per geometry (closed form, vectorised over deposits
and Monte Carlo draws); each deposit's result is cached by its parameter set (geometry, size, perfusion,
patient, modality, processing, draws, seed), so re-checking an edited plan recomputes only the changed
injections. Derived values are cached too: each deposit's percentile interval (on its cached result), the
plan's retained-volume interval (by deposits, volumes and level), deposit geometries and recommendations
(pure functions of their numbers). The plan check (`graft_findings`) uses `CHECK_DRAWS` draws; the detailed report
(`predict_plan`, `regenguide graft plan`) uses 2,000 by default.

Findings are aggregated: a problem found at one injection is a card for that injection (with its own
actionable suggestion); the same problem at several injections is one card listing them.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from regenguide.domain.findings import INDICATOR_RANK, Finding, Indicator, Source, Suggestion, injection_ranges
from regenguide.domain.plan import FAT_MODALITIES, Device, Injection, Modality, PlanDocument
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

#: Monte Carlo draws of the plan check (CDS Hooks path); the detailed report defaults to 2,000.
CHECK_DRAWS = 200
REPORT_DRAWS = 2000
_CACHE_SIZE = 4096
_PLAN_CACHE_SIZE = 256

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
CITE_THREAD = ["graft.carpaneda-1992", "graft.khouri-2014-diffusion", "graft.expert-opinion"]


class Recommendation(BaseModel):
    """What reaches the target with deposits that stay in the survival zone (nominal parameters)."""

    passes: int | None = Field(
        default=None, description="passes so that strands stay within the survival zone"
    )
    max_strand_diameter_mm: float
    max_bolus_ml: float
    max_ml_per_pass: float | None = Field(
        default=None, description="largest aliquot one retrograde pass may thread along the tunnel"
    )
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
    tunnel_length_mm: float | None = Field(default=None, description="strand length used (strands only)")
    tunnel_length_assumed: bool = Field(
        default=False, description="the plan gave no tunnel length: the knowledge-base assumption was used"
    )
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


@lru_cache(maxsize=256)
def _weakest(citations: tuple[str, ...]) -> str:
    refs = resolve(list(citations), "graft findings")
    worst = max((r.evidence for r in refs), key=lambda e: EVIDENCE_RANK[e], default=EvidenceLabel.verified)
    return worst.value


def weakest_evidence(citations: list[str]) -> str:
    return _weakest(tuple(citations))


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
    citations = list(dict.fromkeys(citations))
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


# ----------------------------------------------------------------------------------------------------
# Deposit geometry
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deposit:
    geometry: str
    radius_cm: float  # strand/bolus radius or half the layer thickness
    count: float  # strands (passes) or boluses
    coalesced: bool = False
    threaded: bool = False  # laid along a tunnel (strands, or a layer of strands)
    tunnel_length_mm: float | None = None
    tunnel_length_assumed: bool = False


def _deposit(inj: Injection, kb: GraftKnowledge) -> Deposit | None:
    """Deposit geometry of one injection (cm), or None when the plan does not say enough."""
    return _deposit_of(
        inj.volume_ml,
        inj.device is Device.cannula,
        inj.passes,
        inj.bolus_ml,
        inj.tunnel_length_mm,
        inj.recipient_thickness_mm,
        kb.value("default_tunnel_length_mm"),
        kb.value("fan_width_over_tunnel_length"),
    )


# Cache: a plan repeats the same few injection geometries (and a re-checked plan repeats all of them); the
# geometry is a pure function of these numbers and `Deposit` is immutable, so instances can be shared.
@lru_cache(maxsize=_CACHE_SIZE, typed=True)
def _deposit_of(
    volume: float | None,
    cannula: bool,
    passes: int | None,
    bolus_ml: float | None,
    tunnel_length_mm: float | None,
    recipient_thickness_mm: float | None,
    default_tunnel_length_mm: float,
    fan_width_over_tunnel_length: float,
) -> Deposit | None:
    if not volume:
        return None
    length_mm = tunnel_length_mm
    assumed = False
    if passes and length_mm:
        per_strand = volume / passes
    elif cannula and (bolus_ml or passes):
        # Retrograde threading: each aliquot (or volume / passes) is laid along one tunnel.
        per_strand = volume / passes if passes else min(float(bolus_ml or volume), volume)
        if length_mm is None:
            length_mm = default_tunnel_length_mm
            assumed = True
    elif bolus_ml:
        radius = (3.0 * bolus_ml / (4.0 * math.pi)) ** (1.0 / 3.0)
        return Deposit("sphere", radius, volume / bolus_ml)
    else:
        return None
    count = volume / per_strand
    length = length_mm / 10.0
    radius = math.sqrt(per_strand / (math.pi * length))
    if length < 2.0 * radius:
        # Shorter than it is thick: a compact deposit rather than a strand.
        sphere = (3.0 * per_strand / (4.0 * math.pi)) ** (1.0 / 3.0)
        return Deposit("sphere", sphere, count, threaded=True, tunnel_length_mm=length_mm,
                       tunnel_length_assumed=assumed)
    if recipient_thickness_mm:
        # Strands spread over the bed's cross-section (fan width x thickness, several planes): each strand
        # owns a square cell; strands touch when the cell side is below their diameter (graft fraction
        # above pi/4).
        width = fan_width_over_tunnel_length * length
        spacing = math.sqrt(width * recipient_thickness_mm / 10.0 / count)
        if spacing < 2.0 * radius:
            thickness = volume / (length * width)
            return Deposit("slab", thickness / 2.0, 1.0, coalesced=True, threaded=True,
                           tunnel_length_mm=length_mm, tunnel_length_assumed=assumed)
    return Deposit("cylinder", radius, count, threaded=True, tunnel_length_mm=length_mm,
                   tunnel_length_assumed=assumed)


def _survival_radius(geometry: str, p: ModelParameters) -> float:
    """Largest half-size whose centre stays above the adipocyte threshold (nominal, zero-order)."""
    m = cf.exponent(geometry)
    alpha = p.solubility_mol_cm3_mmhg
    dc = alpha * (p.boundary_po2_mmhg - p.adipocyte_threshold_mmhg)
    return math.sqrt(max(2.0 * (m + 1) * p.diffusivity_cm2_s * dc / p.consumption_mol_cm3_s, 0.0))


# ----------------------------------------------------------------------------------------------------
# Vectorised, cached evaluation of deposits
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    """Plan-level inputs shared by every deposit of the plan."""

    obese: bool
    modality: str
    processing: str
    draws: int
    seed: int | None


@dataclass(frozen=True)
class _DepositResult:
    survival: float
    regenerating: float
    necrotic: float
    retention: float  # nominal parameters
    critical_size_mm: float
    draws: np.ndarray = field(repr=False)  # retained fraction per Monte Carlo draw (read-only)
    # Cache: percentile interval of `draws` by lower tail (percent). It depends only on the draws, so the
    # plan check, which re-checks the same deposits on every request, sorts each deposit's draws once.
    intervals: dict[float, tuple[float, float]] = field(default_factory=dict, repr=False, compare=False)


_Key = tuple[str, float, str, _Setting]
_INTERVALS_PER_RESULT = 8  # interval levels remembered per deposit (the API lets callers choose the level)
_results: OrderedDict[_Key, _DepositResult] = OrderedDict()
_lock = threading.Lock()


@lru_cache(maxsize=32)
def _sampled(draws: int, seed: int | None, obese: bool) -> dict[str, np.ndarray]:
    out = sample_parameters(draws, seed=seed, obese=obese)
    for arr in out.values():
        arr.setflags(write=False)
    return out


def _draws_for(setting: _Setting, kb: GraftKnowledge, default_kb: bool) -> dict[str, np.ndarray]:
    if default_kb and setting.seed is not None:
        return _sampled(setting.draws, setting.seed, setting.obese)
    return sample_parameters(setting.draws, seed=setting.seed, knowledge=kb, obese=setting.obese)


def _evaluate(keys: list[_Key], kb: GraftKnowledge) -> dict[_Key, _DepositResult]:
    """Results for every key; uncached keys are computed together, one vectorised call per geometry."""
    default_kb = kb is load_graft_knowledge()
    cacheable = default_kb and all(k[3].seed is not None for k in keys)
    out: dict[_Key, _DepositResult] = {}
    missing: list[_Key] = []
    with _lock:
        for key in dict.fromkeys(keys):
            hit = _results.get(key) if cacheable else None
            if hit is None:
                missing.append(key)
            else:
                _results.move_to_end(key)
                out[key] = hit
    groups: dict[tuple[str, _Setting], list[_Key]] = {}
    for key in missing:
        groups.setdefault((key[0], key[3]), []).append(key)
    for (geometry, setting), group in groups.items():
        sampled = _draws_for(setting, kb, default_kb)
        radii = np.array([k[1] for k in group])
        factor = np.array([kb.perfusion_po2_factor[k[2]].value for k in group])  # type: ignore[index]
        nanofat = setting.modality == Modality.nanofat.value
        # Monte Carlo: draws (rows) x deposits (columns), parameters shared across deposits per draw.
        col = {name: v[:, None] for name, v in sampled.items()}
        col["boundary_po2_mmhg"] = col["boundary_po2_mmhg"] * factor[None, :]
        zones = closed_form_zones(geometry, radii[None, :], col)
        mult = take_multiplier(setting.modality, setting.processing, col["cal_retention_factor"], kb)
        retained = retained_fraction(
            zones["fractions"],
            take_survival=col["take_survival"],
            take_regenerating=col["take_regenerating"],
            multiplier=mult,
            nanofat=nanofat,
        )
        # Nominal parameters (the perfusion factor multiplies the bed pO2, as in nominal_parameters).
        p = nominal_parameters(kb, obese=setting.obese)
        nominal = {name: np.full(len(group), getattr(p, name)) for name in ModelParameters.__dataclass_fields__}
        nominal["boundary_po2_mmhg"] = p.boundary_po2_mmhg * factor
        zn = closed_form_zones(geometry, radii, nominal)
        fr = zn["fractions"]
        ret_nominal = retained_fraction(
            fr,
            take_survival=p.take_survival,
            take_regenerating=p.take_regenerating,
            multiplier=take_multiplier(setting.modality, setting.processing, p.cal_retention_factor, kb),
            nanofat=nanofat,
        )
        critical = 2.0 * cf.critical_radius(  # diameter, cm
            geometry, p.diffusivity_cm2_s, p.solubility_mol_cm3_mmhg * nominal["boundary_po2_mmhg"],
            p.consumption_mol_cm3_s,
        )
        for j, key in enumerate(group):
            column = np.ascontiguousarray(retained[:, j])
            column.setflags(write=False)
            out[key] = _DepositResult(
                survival=float(fr["survival"][j]),
                regenerating=float(fr["regenerating"][j]),
                necrotic=float(fr["necrotic"][j]),
                retention=float(ret_nominal[j]),
                critical_size_mm=float(10.0 * critical[j]),
                draws=column,
            )
    if cacheable and missing:
        with _lock:
            for key in missing:
                _results[key] = out[key]
            while len(_results) > _CACHE_SIZE:
                _results.popitem(last=False)
    return out


def _intervals(keys: list[_Key], results: dict[_Key, _DepositResult], tail: float) -> list[tuple[float, float]]:
    """(tail, 100 - tail) percentiles of each deposit's retained fraction, in the order of `keys`. Those not
    cached on the result are computed in one call (per column, the same numbers as a whole-matrix call)."""
    found: dict[_Key, tuple[float, float]] = {}
    todo: list[_Key] = []
    for key in dict.fromkeys(keys):
        hit = results[key].intervals.get(tail)
        if hit is None:
            todo.append(key)
        else:
            found[key] = hit
    if todo:
        q = np.percentile(np.column_stack([results[k].draws for k in todo]), [tail, 100 - tail], axis=0)
        for j, key in enumerate(todo):
            found[key] = (float(q[0, j]), float(q[1, j]))
            cached = results[key].intervals
            if len(cached) < _INTERVALS_PER_RESULT:
                cached[tail] = found[key]
    return [found[k] for k in keys]


# Cache: the plan's retained-volume interval is a percentile over the draws of the volume-weighted sum of its
# deposits' draws, so it depends only on the deposits (keys), their volumes and the tail; the plan check asks
# for the same plan's interval on every request. Cached under the same conditions as the deposit results.
_PlanKey = tuple[_Setting, tuple[tuple[str, float, str], ...], tuple[float, ...], float]
_plan_intervals: OrderedDict[_PlanKey, tuple[float, float]] = OrderedDict()


def _retained_interval_ml(
    setting: _Setting,
    keys: list[_Key],
    results: dict[_Key, _DepositResult],
    volumes: np.ndarray,
    tail: float,
    cacheable: bool,
) -> tuple[float, float]:
    """(tail, 100 - tail) percentiles of the plan's retained volume (mL) over the Monte Carlo draws; `keys`
    (all with `setting`) and `volumes` are the simulated injections, in plan order."""
    plan_key: _PlanKey = (setting, tuple(k[:3] for k in keys), tuple(volumes.tolist()), tail)
    if cacheable:
        with _lock:
            hit = _plan_intervals.get(plan_key)
            if hit is not None:
                _plan_intervals.move_to_end(plan_key)
                return hit
    per_draw_ml = np.column_stack([results[k].draws for k in keys]) @ volumes
    lo_ml, hi_ml = np.percentile(per_draw_ml, [tail, 100 - tail])
    if cacheable:
        with _lock:
            _plan_intervals[plan_key] = (lo_ml, hi_ml)
            while len(_plan_intervals) > _PLAN_CACHE_SIZE:
                _plan_intervals.popitem(last=False)
    return lo_ml, hi_ml


@lru_cache(maxsize=4096)
def _nominal_retention(geometry: str, radius_cm: float, p: ModelParameters, mult: float, nanofat: bool) -> float:
    zones = closed_form_zones(geometry, radius_cm, p)
    return float(
        np.asarray(
            retained_fraction(
                zones["fractions"],
                take_survival=p.take_survival,
                take_regenerating=p.take_regenerating,
                multiplier=mult,
                nanofat=nanofat,
            )
        ).reshape(-1)[0]
    )


# ----------------------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------------------


def predict_plan(
    plan: PlanDocument,
    *,
    target_retained_ml: float | None = None,
    processing: str = "unspecified",
    draws: int = REPORT_DRAWS,
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
    nanofat = plan.modality is Modality.nanofat
    setting = _Setting(obese, modality, processing, draws, seed)
    issues: list[_Issue] = []
    # Predictions are built in one constructor call each (assigning fields one by one on a pydantic model
    # costs more than validating them together); `by_index` collects them in plan order.
    by_index: dict[int, InjectionPrediction] = {}
    deposits: list[tuple[int, Deposit, str]] = []
    for i, inj in enumerate(plan.injections):
        dep = _deposit(inj, kb)
        if dep is None:
            by_index[i] = InjectionPrediction(
                index=i,
                region=inj.region,
                side=inj.side.value,
                volume_ml=inj.volume_ml,
                note=(
                    "not simulated: give volume_ml and either bolus_ml, passes with tunnel_length_mm, or a "
                    "cannula with bolus_ml or passes"
                ),
            )
            issues.append(
                _Issue(
                    "geometry_missing",
                    Indicator.info,
                    i,
                    inj.region,
                    "graft retention not predicted (no deposit geometry)",
                    "graft retention not predicted (no deposit geometry)",
                    "The simulator needs volume_ml and either bolus_ml, passes with tunnel_length_mm, or a "
                    "cannula with bolus_ml or passes, to derive the strand or bolus size.",
                    CITE_ZONES,
                )
            )
        else:
            deposits.append((i, dep, inj.recipient_perfusion or "normal"))

    keys: list[_Key] = [(dep.geometry, dep.radius_cm, perf, setting) for _, dep, perf in deposits]
    results = _evaluate(keys, kb)
    simulated_idx = [i for i, _, _ in deposits]
    volumes = np.array([inj.volume_ml or 0.0 for inj in plan.injections])
    tail = 100 * (1 - interval) / 2
    per_injection = _intervals(keys, results, tail)
    planned_total = float(volumes.sum())
    params: dict[str, ModelParameters] = {}
    mult = float(take_multiplier(modality, processing, kb.value("cal_retention_factor"), kb))
    for (i, dep, perf), key, retention_interval in zip(deposits, keys, per_injection, strict=True):
        inj = plan.injections[i]
        res = results[key]
        p = params.get(perf) or params.setdefault(perf, nominal_parameters(kb, obese=obese, perfusion=perf))
        volume = float(inj.volume_ml or 0.0)
        fields: dict[str, object] = {}
        if dep.tunnel_length_assumed:
            fields["note"] = (
                f"tunnel length not given: {dep.tunnel_length_mm:g} mm assumed (expert opinion, "
                "default_tunnel_length_mm)"
            )
        capacity_ml = None
        if inj.tunnel_length_mm and inj.recipient_thickness_mm:
            length = inj.tunnel_length_mm / 10.0
            bed = length * kb.value("fan_width_over_tunnel_length") * length * inj.recipient_thickness_mm / 10.0
            capacity_ml = kb.value("capacity_fraction") * bed
            ratio = volume / capacity_ml
            fields["graft_to_capacity_ratio"] = ratio
            # Linear compliance up to the critical pressure (expert opinion): ratio 1 <-> 9 mmHg.
            fields["interstitial_pressure_mmhg"] = ratio * kb.value("critical_ifp_mmhg")
        target_ml = None
        if target_retained_ml is not None:
            share = float(volumes[i] / planned_total) if planned_total else 0.0
            target_ml = target_retained_ml * share
        pred = InjectionPrediction(
            index=i,
            region=inj.region,
            side=inj.side.value,
            volume_ml=inj.volume_ml,
            geometry=dep.geometry,
            deposit_diameter_mm=20.0 * dep.radius_cm,
            deposits=dep.count,
            coalesced=dep.coalesced,
            tunnel_length_mm=dep.tunnel_length_mm,
            tunnel_length_assumed=dep.tunnel_length_assumed,
            critical_size_mm=res.critical_size_mm,
            predicted_retention=res.retention,
            retention_interval=retention_interval,
            predicted_retained_ml=res.retention * volume,
            survival_fraction=res.survival,
            regenerating_fraction=res.regenerating,
            necrotic_fraction=res.necrotic,
            recommendation=_recommend(inj, dep, p, kb, mult, nanofat, capacity_ml, target_ml),
            **fields,
        )
        by_index[i] = pred
        issues += _injection_issues(i, inj, dep, pred, kb)
    predictions = [by_index[i] for i in range(len(plan.injections))]

    findings = _aggregate(issues)
    # Plan totals (only simulated injections count).
    retained_ml = float(sum(predictions[i].predicted_retained_ml or 0.0 for i in simulated_idx))
    plan_ret = plan_int = ret_int_ml = None
    sim_vol = volumes[simulated_idx] if simulated_idx else np.zeros(0)
    sim_total = sim_vol.sum()
    if simulated_idx and sim_total > 0:
        cacheable = kb is load_graft_knowledge() and seed is not None
        lo_ml, hi_ml = _retained_interval_ml(setting, keys, results, sim_vol, tail, cacheable)
        plan_ret = retained_ml / float(sim_total)
        plan_int = (float(lo_ml / sim_total), float(hi_ml / sim_total))
        ret_int_ml = (float(lo_ml), float(hi_ml))
        assumed = [i for i, dep, _ in deposits if dep.tunnel_length_assumed]
        findings += _plan_findings(
            predictions, plan_ret, plan_int, retained_ml, target_retained_ml, kb, nanofat, assumed
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


def _floor3(x: float) -> float:
    """Round down to 0.001 mL (a suggested aliquot must not exceed the computed maximum)."""
    return max(math.floor(x * 1000.0) / 1000.0, 0.001)


def _recommend(
    inj: Injection,
    dep: Deposit,
    p: ModelParameters,
    kb: GraftKnowledge,
    mult: float,
    nanofat: bool,
    capacity_ml: float | None,
    target_ml: float | None,
) -> Recommendation:
    """Deposits small enough to stay wholly in the survival zone, capped by the published maxima (threads
    <= 3.0 mm, Carpaneda 1992; lobule radius <= 2 mm, Khouri 2014), then volume and sessions for the
    target. Strands stay strands (more passes or smaller aliquots per pass); true boluses stay boluses."""
    rec = _recommendation(
        float(inj.volume_ml or 0.0),
        inj.passes,
        dep.threaded,
        dep.tunnel_length_mm,
        dep.radius_cm,
        p,
        mult,
        nanofat,
        capacity_ml,
        target_ml,
        kb.value("max_thread_diameter_mm"),
        kb.value("max_lobule_radius_mm"),
        kb.value("session_interval_days"),
    )
    # The cached instance is shared: hand out a copy (all fields are scalars, so a shallow copy is independent).
    return rec.model_copy()


# Cache: the recommendation is a pure function of these hashable inputs, and a plan check recomputes the
# same recommendations on every request (and within a plan for repeated injections). Callers get a copy.
@lru_cache(maxsize=_CACHE_SIZE, typed=True)
def _recommendation(
    volume: float,
    planned_passes: int | None,
    threaded: bool,
    tunnel_length_mm: float | None,
    radius_cm: float,
    p: ModelParameters,
    mult: float,
    nanofat: bool,
    capacity_ml: float | None,
    target_ml: float | None,
    max_thread_diameter_mm: float,
    max_lobule_radius_mm: float,
    session_interval_days: float,
) -> Recommendation:
    r_cyl = min(_survival_radius("cylinder", p), max_thread_diameter_mm / 20.0)
    r_sph = min(_survival_radius("sphere", p), max_lobule_radius_mm / 10.0)
    max_bolus = 4.0 / 3.0 * math.pi * r_sph**3
    passes = None
    per_pass = None
    if threaded and tunnel_length_mm:
        length = tunnel_length_mm / 10.0
        per_pass = length * math.pi * r_cyl**2
        geometry, radius = "cylinder", r_cyl
        if volume > 0:
            passes = max(planned_passes or 1, math.ceil(volume / per_pass))
            radius = math.sqrt(volume / (passes * length) / math.pi)
    else:
        geometry, radius = "sphere", min(radius_cm, r_sph)
    expected = _nominal_retention(geometry, radius, p, mult, nanofat)
    rec = Recommendation(
        passes=passes,
        max_strand_diameter_mm=20.0 * r_cyl,
        max_bolus_ml=max_bolus,
        max_ml_per_pass=per_pass,
        expected_retention=expected,
    )
    inject = volume
    if target_ml is not None and expected > 0:
        inject = target_ml / expected
        rec.target_retained_ml = target_ml
        rec.inject_ml = inject
        rec.overcorrection_percent = 100.0 * (inject / target_ml - 1.0) if target_ml > 0 else None
        if per_pass is not None:
            rec.passes = max(1, math.ceil(inject / per_pass))
    if capacity_ml is not None and capacity_ml > 0 and inject > capacity_ml:
        rec.sessions = math.ceil(inject / capacity_ml)
        rec.volume_per_session_ml = inject / rec.sessions
        rec.session_interval_days = session_interval_days
        if per_pass is not None:
            rec.passes = max(1, math.ceil(rec.volume_per_session_ml / per_pass))
    return rec


# ----------------------------------------------------------------------------------------------------
# Findings: per-injection issues, aggregated into cards
# ----------------------------------------------------------------------------------------------------


class _Proposal(NamedTuple):
    """A suggestion of one injection. `Suggestion` models are built only for the cards (most per-injection
    proposals are merged into one card's suggestion, so validating each of them would be wasted work)."""

    label: str
    changes: dict[str, object]


@dataclass
class _Issue:
    rule: str
    indicator: Indicator
    index: int
    region: str
    text: str  # what is wrong at this injection (with its numbers)
    headline: str  # the problem, for a card covering several injections
    detail: str
    citations: list[str]
    suggestions: list[_Proposal] = field(default_factory=list)


def _aggregate(issues: list[_Issue]) -> list[Finding]:
    """One finding per issue found at a single injection (actionable, with its own suggestions); one finding
    per rule listing the injections when the same issue is found at several."""
    by_rule: dict[str, list[_Issue]] = {}
    for issue in issues:
        by_rule.setdefault(issue.rule, []).append(issue)
    out: list[Finding] = []
    for rule, group in by_rule.items():
        first = group[0]
        if len(group) == 1:
            out.append(
                _finding(
                    rule,
                    first.indicator,
                    f"Injection {first.index} ({first.region}): {first.text}",
                    first.detail,
                    first.citations,
                    first.index,
                    [Suggestion(label=label, changes=changes) for label, changes in first.suggestions],
                )
            )
            continue
        indices = [g.index for g in group]
        by_text: dict[str, list[_Issue]] = {}
        for g in group:
            by_text.setdefault(g.text, []).append(g)
        lines = []
        for text, same in by_text.items():
            regions = ", ".join(dict.fromkeys(g.region for g in same))
            lines.append(f"injection(s) {injection_ranges([g.index for g in same])} ({regions}): {text}")
        by_suggestion: dict[tuple[str, str], tuple[_Proposal, list[int]]] = {}
        for g in group:
            for s in g.suggestions:
                key = (s.label, repr(sorted(s.changes.items())))
                by_suggestion.setdefault(key, (s, []))[1].append(g.index)
        suggestions = []
        for s, where in by_suggestion.values():
            label = s.label if len(where) == len(group) else f"{s.label} (injections {injection_ranges(where)})"
            suggestions.append(Suggestion(label=label[:200], changes=s.changes))
        citations = [c for g in group for c in g.citations]
        indicator = max((g.indicator for g in group), key=lambda x: INDICATOR_RANK[x])
        out.append(
            _finding(
                rule,
                indicator,
                f"{len(group)} injections ({injection_ranges(indices)}): {first.headline}",
                first.detail + " Affected: " + "; ".join(lines) + ".",
                citations,
                None,
                suggestions,
            )
        )
    return out


def _injection_issues(
    i: int, inj: Injection, dep: Deposit, pred: InjectionPrediction, kb: GraftKnowledge
) -> list[_Issue]:
    out: list[_Issue] = []
    rec = pred.recommendation
    region = inj.region
    d = pred.deposit_diameter_mm or 0.0
    assumption = (
        f" Strand length {dep.tunnel_length_mm:g} mm is assumed (no tunnel_length_mm in the plan; expert "
        "opinion)."
        if dep.tunnel_length_assumed
        else ""
    )
    extra = ["graft.expert-opinion"] if dep.tunnel_length_assumed else []
    if pred.coalesced:
        out.append(
            _Issue(
                "crowding",
                Indicator.warning,
                i,
                region,
                f"{dep.count:.0f} strands do not fit apart in the recipient bed; they coalesce into a "
                f"{d:.1f} mm layer",
                "strands do not fit apart in the recipient bed and coalesce into a layer",
                "Strands that touch merge into a layer (modelled as a slab), which lengthens the diffusion "
                "distance (Khouri 2014). Spread the fan, add tunnels or stage the volume." + assumption,
                ["graft.khouri-2014-megavolume", "graft.khouri-2014-diffusion", "graft.expert-opinion"],
            )
        )
    if (pred.necrotic_fraction or 0.0) > 0.01:
        suggestions: list[_Proposal] = []
        if rec is not None and dep.threaded and inj.passes and rec.passes is not None:
            suggestions.append(_Proposal(f"Use {rec.passes} passes (thinner strands)", {"passes": rec.passes}))
        elif rec is not None and dep.threaded and rec.max_ml_per_pass is not None:
            ml = _floor3(rec.max_ml_per_pass)
            suggestions.append(_Proposal(f"Thread at most {ml:.3f} mL per pass", {"bolus_ml": ml}))
        elif inj.bolus_ml and rec is not None:
            ml = _floor3(rec.max_bolus_ml)
            suggestions.append(_Proposal(f"Use aliquots of at most {ml:.3f} mL", {"bolus_ml": ml}))
        kind = "boluses" if pred.geometry == "sphere" else ("layer" if pred.coalesced else "strands")
        out.append(
            _Issue(
                "necrotic_core",
                Indicator.warning,
                i,
                region,
                f"{d:.1f} mm {kind} exceed the {pred.critical_size_mm or 0:.1f} mm critical size; "
                f"{100 * (pred.necrotic_fraction or 0):.0f}% central necrosis predicted",
                "deposits exceed the critical size; central necrosis predicted",
                "Beyond the critical size the core of the deposit has no oxygen and dies (oil cysts, "
                "calcification). Published limits: viable rim 1.5 +/- 0.5 mm (Carpaneda 1993), radius > "
                "0.16 cm predicts central necrosis (Khouri 2014), threads <= 3 mm (Carpaneda 1992)." + assumption,
                CITE_ZONES + ["graft.carpaneda-1992", "graft.o2-solubility"] + extra,
                suggestions,
            )
        )
    if pred.geometry == "sphere" and not dep.threaded and d / 2 > kb.value("max_lobule_radius_mm"):
        out.append(
            _Issue(
                "bolus_too_large",
                Indicator.warning,
                i,
                region,
                f"bolus radius {d / 2:.1f} mm exceeds the 2 mm lobule limit",
                "bolus radius exceeds the 2 mm lobule limit",
                "Khouri 2014 (letter reply) advises avoiding lobules with a radius above 2 mm. A cannula "
                "threading the aliquot retrograde along a tunnel leaves a thin strand instead (give device "
                "'cannula' and tunnel_length_mm).",
                ["graft.khouri-2014-diffusion"],
                [_Proposal("Smaller aliquots", {"bolus_ml": _floor3(rec.max_bolus_ml)})] if rec else [],
            )
        )
    if inj.recipient_thickness_mm and d > inj.recipient_thickness_mm:
        out.append(
            _Issue(
                "strand_exceeds_bed",
                Indicator.warning,
                i,
                region,
                f"{d:.1f} mm deposits are thicker than the {inj.recipient_thickness_mm:.1f} mm recipient bed",
                "deposits are thicker than the recipient bed",
                "The deposit cannot be surrounded by recipient tissue; use thinner strands or more passes."
                + assumption,
                CITE_ZONES + ["graft.expert-opinion"],
            )
        )
    if pred.graft_to_capacity_ratio is not None and pred.graft_to_capacity_ratio > 1.0 and rec is not None:
        sessions = max(rec.sessions, 2)
        out.append(
            _Issue(
                "capacity_exceeded",
                Indicator.warning,
                i,
                region,
                f"graft-to-capacity ratio {pred.graft_to_capacity_ratio:.2f} (pressure ~"
                f"{pred.interstitial_pressure_mmhg or 0:.0f} mmHg > 9); stage in {sessions} sessions",
                "graft volume exceeds the recipient bed's capacity (pressure > 9 mmHg); stage the sessions",
                "Crowding raises interstitial fluid pressure above the critical 9 mmHg and lowers retention "
                "(Khouri 2014; Del Vecchio 2014). The bed capacity estimate is expert opinion. Sessions about "
                f"{kb.value('session_interval_days'):.0f} days apart (Carpaneda).",
                CITE_CAPACITY,
                [
                    _Proposal(
                        f"Stage: {sessions} sessions, {kb.value('session_interval_days'):.0f} days apart",
                        {"volume_ml": round(float(rec.volume_per_session_ml or (inj.volume_ml or 0) / 2), 2)},
                    )
                ],
            )
        )
    return out


def _plan_findings(
    predictions: list[InjectionPrediction],
    retention: float,
    interval: tuple[float, float],
    retained_ml: float,
    target_ml: float | None,
    kb: GraftKnowledge,
    nanofat: bool,
    assumed: list[int],
) -> list[Finding]:
    out: list[Finding] = []
    lo, hi = interval
    detail = (
        f"Predicted retained volume {retained_ml:.1f} mL. Published facial retention: pooled 47% "
        "(95% CI 41-53%), range 26-83% (Lv 2021). " + DISCLAIMER
    )
    if assumed:
        detail += (
            f" Cannula aliquots are modelled as strands threaded along the tunnel (Coleman technique); the "
            f"plan gives no tunnel length at injection(s) {injection_ranges(assumed)}, so "
            f"{kb.value('default_tunnel_length_mm'):g} mm is assumed (expert opinion)."
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
            CITE_MODEL + (CITE_THREAD if assumed else []),
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
                "smaller aliquots.",
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
                "skin quality rather than volume.",
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
    draws: int = Field(default=REPORT_DRAWS, ge=10, le=200_000)
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


def graft_findings(plan: PlanDocument, *, draws: int = CHECK_DRAWS) -> list[Finding]:
    """Findings of the graft simulator for the plan check (empty for non-fat modalities). Uses a smaller
    Monte Carlo (`CHECK_DRAWS`) than the detailed report; deposit results are cached by parameter set."""
    if plan.modality not in FAT_MODALITIES:
        return []
    return predict_plan(plan, draws=draws).findings
