"""Vascular maps from Doppler and the plan-check rules that use them.

A `VascularMap` holds, per patient region (and side), the vessels found on Doppler: centre depth
below the skin, diameter, lateral offset from a landmark and the image each came from. Optionally it
carries the layer depths measured on the same image, so that a planned *plane* can be turned into a
depth range from the patient's own anatomy instead of a typical value.

Rules (all data in `kb/data/imaging/vascular_rules.yaml`, rule ids prefixed `imaging.`):

- `imaging.artery_within_margin`: a planned deposit whose depth (Injection.depth_mm, else the
  plane's range from the map's layers) comes within the safety margin of the wall of a mapped
  artery (or a vessel of unknown kind: colour Doppler alone does not tell arteries from veins).
  The margin is a project default labelled expert_opinion: no published source gives one.
- `imaging.vascular_map_missing`: an injection in a region where Doppler is required (by the rule
  data, or because the plan itself asks for Doppler guidance) and no map covers that region/side.
- `imaging.depth_unknown`: a mapped region where the deposit's depth cannot be worked out, so the
  depth check could not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from regenguide.domain.findings import Finding, Indicator, Source
from regenguide.domain.plan import Injection, PlanDocument, Side
from regenguide.imaging.cine import VesselTrack
from regenguide.imaging.config import RegionRule, VascularRules, vascular_rules
from regenguide.imaging.dicom_io import CalibrationMissing, require_calibration
from regenguide.imaging.doppler import FlowResult
from regenguide.imaging.measure import ThicknessMeasurement
from regenguide.imaging.refs import ImageReference
from regenguide.kb import knowledge_base
from regenguide.kb.references import EvidenceLabel, resolve

SOURCE = Source(label="RegenGuide ultrasound vascular map")
_EVIDENCE_RANK = {
    EvidenceLabel.verified: 0,
    EvidenceLabel.secondary: 1,
    EvidenceLabel.expert_opinion: 2,
    EvidenceLabel.unverified: 3,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MappedVessel(_Model):
    kind: Literal["artery", "vein", "unknown"] = "unknown"
    name: str | None = None
    depth_mm: float = Field(ge=0, le=200, description="centre depth below the skin surface")
    diameter_mm: float | None = Field(default=None, gt=0, le=50)
    lateral_offset_mm: float | None = Field(
        default=None, description="from the landmark, + to the image right"
    )
    direction: str | None = None
    image: ImageReference | None = None


class LayerDepths(_Model):
    """Depths below the skin surface (mm) measured on the mapped image; skin itself is 0."""

    dermis_bottom_mm: float | None = Field(default=None, ge=0)
    fascia_mm: float | None = Field(default=None, ge=0)
    bone_mm: float | None = Field(default=None, ge=0)


class VascularMap(_Model):
    region: str = Field(min_length=1)
    side: Side | None = None
    patient_ref: str | None = Field(default=None, description="opaque id kept by the store; unused by checks")
    landmark: str | None = None
    acquired_on: str | None = Field(default=None, description="ISO date")
    vessels: list[MappedVessel] = Field(default_factory=list)
    layers: LayerDepths | None = None
    image: ImageReference | None = None


def _norm(code: str) -> str:
    return "_".join(code.strip().lower().replace("-", " ").split())


def vascular_map_from_flow(
    result: FlowResult,
    *,
    region: str,
    side: Side | None = None,
    landmark: str | None = None,
    landmark_x_px: float | None = None,
    image: ImageReference | None = None,
    kind: Literal["artery", "vein", "unknown"] = "unknown",
    thickness: ThicknessMeasurement | None = None,
    min_diameter_mm: float = 0.0,
) -> VascularMap:
    """Turn one frame's Doppler extraction into a map; needs a calibrated image."""
    cal = require_calibration(result.calibration, result.warnings)
    vessels: list[MappedVessel] = []
    for v in result.vessels:
        if v.depth_mm is None or v.diameter_mm is None or v.depth_mm < 0 or v.diameter_mm < min_diameter_mm:
            continue
        ref = None
        if image is not None:
            ref = image.model_copy(update={"frame": result.frame, "point_px": v.centroid_px})
        vessels.append(
            MappedVessel(
                kind=kind,
                depth_mm=v.depth_mm,
                diameter_mm=v.diameter_mm,
                lateral_offset_mm=(v.centroid_px[0] - landmark_x_px) * cal.mm_per_px_x
                if landmark_x_px is not None
                else None,
                direction=v.direction.value,
                image=ref,
            )
        )
    layers = None
    if thickness is not None and thickness.boundaries.skin is not None:
        mm_per_sample = _mm_per_sample(thickness, cal.mm_per_px_x, cal.mm_per_px_y)
        b = thickness.boundaries
        skin = b.skin or 0.0
        layers = LayerDepths(
            dermis_bottom_mm=(b.dermis_bottom - skin) * mm_per_sample
            if b.dermis_bottom is not None
            else None,
            fascia_mm=(b.fascia - skin) * mm_per_sample if b.fascia is not None else None,
        )
    return VascularMap(
        region=region, side=side, landmark=landmark, vessels=vessels, layers=layers, image=image
    )


def vascular_map_from_tracks(
    tracks: Sequence[VesselTrack],
    *,
    region: str,
    side: Side | None = None,
    landmark: str | None = None,
    landmark_x_px: float | None = None,
    mm_per_px_x: float | None = None,
    image: ImageReference | None = None,
    kind: Literal["artery", "vein", "unknown"] = "unknown",
    min_persistence: float = 0.25,
    min_diameter_mm: float = 0.0,
) -> VascularMap:
    """A map from the vessels followed through a cine (`cine.track_vessels`); tracks present in
    fewer than `min_persistence` of the frames are left out as colour noise."""
    kept = [t for t in tracks if t.persistence >= min_persistence]
    if kept and all(t.depth_mm is None for t in kept):
        raise CalibrationMissing("the cine has no physical calibration: vessel depths in mm are unknown")
    vessels = [
        MappedVessel(
            kind=kind,
            depth_mm=t.depth_mm,
            diameter_mm=t.diameter_mm,
            lateral_offset_mm=(t.centroid_px[0] - landmark_x_px) * mm_per_px_x
            if landmark_x_px is not None and mm_per_px_x is not None
            else None,
            direction=t.direction.value,
            image=image.model_copy(update={"frame": t.frames[0], "point_px": t.centroid_px})
            if image
            else None,
        )
        for t in kept
        if t.depth_mm is not None and t.depth_mm >= 0 and (t.diameter_mm or 0.0) >= min_diameter_mm
    ]
    return VascularMap(region=region, side=side, landmark=landmark, vessels=vessels, image=image)


def _mm_per_sample(t: ThicknessMeasurement, sx: float, sy: float) -> float:
    length = t.line.length_px
    ux = (t.line.end[0] - t.line.start[0]) / length
    uy = (t.line.end[1] - t.line.start[1]) / length
    return float((ux * ux * sx * sx + uy * uy * sy * sy) ** 0.5)


# --- checks -------------------------------------------------------------------------------------


def _sides_match(planned: Side, mapped: Side | None) -> bool:
    if (
        mapped is None
        or planned in (Side.midline, Side.bilateral)
        or mapped in (Side.midline, Side.bilateral)
    ):
        return True
    return planned == mapped


def _weakest(labels: Sequence[EvidenceLabel | str], citations: Sequence[str]) -> str:
    all_labels = [EvidenceLabel(label) for label in labels] + [ref.evidence for ref in resolve(citations)]
    return max(all_labels, key=lambda e: _EVIDENCE_RANK[e]).value


@dataclass(frozen=True)
class _Depth:
    lo: float
    hi: float
    how: str
    citations: tuple[str, ...] = ()
    evidence: tuple[EvidenceLabel, ...] = ()


def _region_code(code: str) -> str:
    """Canonical region code through the knowledge base's aliases (normalised text otherwise)."""
    found = knowledge_base().region(code)
    return found.code if found is not None else _norm(code)


def _plane_range(injection: Injection, vmap: VascularMap, rules: VascularRules) -> _Depth | None:
    """The planned deposit's depth range: the given depth, else the plane's range from the map's
    measured layers (the patient's own anatomy), else the plane's sourced typical depth in the
    knowledge base when it has one."""
    if injection.depth_mm is not None:
        return _Depth(injection.depth_mm, injection.depth_mm, "planned depth")
    if injection.plane is None:
        return None
    plane = knowledge_base().plane(injection.plane)
    code = plane.code if plane is not None else _norm(injection.plane)
    layers = rules.plane_layers.get(code)
    if layers is not None and vmap.layers is not None:
        depth = {
            "skin": 0.0,
            "dermis_bottom": vmap.layers.dermis_bottom_mm,
            "fascia": vmap.layers.fascia_mm,
            "bone": vmap.layers.bone_mm,
        }
        top, bottom = depth[layers[0]], depth[layers[1]]
        if top is not None and bottom is not None:
            return _Depth(top, bottom, f"plane '{injection.plane}' from the layers measured on the map")
    if plane is not None and plane.depth_mm is not None:
        typical = plane.depth_mm
        lo = typical.min if typical.min is not None else 0.0
        hi = typical.max if typical.max is not None else lo
        return _Depth(
            lo,
            hi,
            f"typical depth of the plane '{plane.code}' (evidence: {typical.evidence.value})",
            tuple(typical.citations),
            (typical.evidence,),
        )
    return None


def _fmt_range(lo: float, hi: float) -> str:
    return f"{lo:.1f} mm" if abs(hi - lo) < 1e-9 else f"{lo:.1f}-{hi:.1f} mm"


def vascular_findings(
    plan: PlanDocument, maps: Sequence[VascularMap], rules: VascularRules | None = None
) -> list[Finding]:
    """Check a plan's injections against the patient's vascular maps."""
    rules = rules or vascular_rules()
    required: dict[str, RegionRule] = {_region_code(r.region): r for r in rules.doppler_required_regions}
    critical: dict[str, RegionRule] = {_region_code(r.region): r for r in rules.critical_regions}
    margin = rules.safety_margin_mm
    findings: list[Finding] = []
    missing_reported: set[tuple[str, Side]] = set()
    for index, injection in enumerate(plan.injections):
        key = _region_code(injection.region)
        matching = [m for m in maps if _region_code(m.region) == key and _sides_match(injection.side, m.side)]
        rule = required.get(key)
        if not matching and (rule is not None or plan.guidance.doppler):
            group = (key, injection.side)
            if group in missing_reported:
                continue
            missing_reported.add(group)
            indices = [
                i + 1
                for i, inj in enumerate(plan.injections)
                if (_region_code(inj.region), inj.side) == group
            ]
            if rule is not None:
                citations, labels = list(rule.citations), [rule.evidence]
                why = f"Doppler mapping is required before injecting the {injection.region}"
                if rule.note:
                    why += f" ({rule.note})"
            else:
                citations, labels = ["seed-review-2026"], [EvidenceLabel.secondary]
                why = "the plan asks for Doppler guidance"
            findings.append(
                Finding(
                    rule="imaging.vascular_map_missing",
                    indicator=Indicator.warning,
                    summary=f"No Doppler vascular map for the {injection.region} ({injection.side.value})"[
                        :139
                    ],
                    detail=(
                        f"Injections {', '.join(map(str, indices))} target the {injection.region} "
                        f"({injection.side.value}); {why}, but no vascular map covers this region and side. "
                        "Map the vessels with colour Doppler and attach the map before signing."
                    ),
                    source=SOURCE,
                    citations=citations,
                    injection_index=index,
                    evidence=_weakest(labels, citations),
                )
            )
            continue
        if not matching:
            continue
        arteries = [(m, v) for m in matching for v in m.vessels if v.kind in ("artery", "unknown")]
        if not arteries:
            continue
        ranges = [(m, _plane_range(injection, m, rules)) for m in matching]
        if all(r is None for _, r in ranges):
            citations = list(margin.citations)
            findings.append(
                Finding(
                    rule="imaging.depth_unknown",
                    indicator=Indicator.info,
                    summary=(
                        f"Injection {index + 1}: depth unknown, not checked against the "
                        f"{injection.region} map"
                    )[:139],
                    detail=(
                        "Give the planned depth (depth_mm), or a plane whose depth the map's measured layers "
                        f"define ({', '.join(sorted(rules.plane_layers))}) or the knowledge base gives, so "
                        "the deposit can be checked against the mapped vessels."
                    ),
                    source=SOURCE,
                    citations=citations,
                    injection_index=index,
                    evidence=_weakest([margin.evidence], citations),
                )
            )
            continue
        crit = critical.get(key)
        # One finding per injection and map: the nearest vessel, with the count of the others.
        for vmap, depth_range in ranges:
            if depth_range is None:
                continue
            lo, hi = depth_range.lo, depth_range.hi
            hits: list[tuple[float, MappedVessel]] = []
            for vessel in vmap.vessels:
                if vessel.kind not in ("artery", "unknown"):
                    continue
                radius = (vessel.diameter_mm or 0.0) / 2.0
                centre_gap = max(lo - vessel.depth_mm, vessel.depth_mm - hi, 0.0)
                wall_gap = centre_gap - radius
                if wall_gap <= margin.value:
                    hits.append((wall_gap, vessel))
            if not hits:
                continue
            hits.sort(key=lambda h: h[0])
            wall_gap, vessel = hits[0]
            findings.append(
                _artery_finding(index, injection, vmap, vessel, wall_gap, len(hits), depth_range, crit, rules)
            )
    return findings


def _artery_finding(
    index: int,
    injection: Injection,
    vmap: VascularMap,
    vessel: MappedVessel,
    wall_gap: float,
    count: int,
    depth: _Depth,
    crit: RegionRule | None,
    rules: VascularRules | None = None,
) -> Finding:
    margin = (rules or vascular_rules()).safety_margin_mm
    citations = list(margin.citations) + (list(crit.citations) if crit else []) + list(depth.citations)
    labels = [margin.evidence] + ([crit.evidence] if crit else []) + list(depth.evidence)
    what = vessel.name or ("artery" if vessel.kind == "artery" else "vessel (kind not known)")
    image = vessel.image or vmap.image
    where = f"Image: {image.label()}." if image else "No image reference was stored with the map."
    others = f" {count - 1} other mapped vessel(s) are also within the margin." if count > 1 else ""
    offset = (
        f", {vessel.lateral_offset_mm:+.1f} mm from {vmap.landmark or 'the landmark'}"
        if vessel.lateral_offset_mm is not None
        else ""
    )
    span = _fmt_range(depth.lo, depth.hi)
    return Finding(
        rule="imaging.artery_within_margin",
        indicator=Indicator.critical if crit else Indicator.warning,
        summary=(
            f"Injection {index + 1} ({injection.region}, {span}) within {margin.value:g} mm of a mapped "
            f"{what} at {vessel.depth_mm:.1f} mm"
        )[:139],
        detail=(
            f"Planned depth {span} ({depth.how}); mapped {what} centre {vessel.depth_mm:.1f} mm deep"
            + (f", diameter {vessel.diameter_mm:.1f} mm" if vessel.diameter_mm else "")
            + offset
            + f". Gap to the vessel wall {max(wall_gap, 0.0):.1f} mm, below the safety margin of "
            f"{margin.value:g} mm (evidence: {margin.evidence.value}"
            + (f"; {margin.note}" if margin.note else "")
            + f").{others} {where}"
        ),
        source=SOURCE,
        citations=citations,
        injection_index=index,
        evidence=_weakest(labels, citations),
    )
