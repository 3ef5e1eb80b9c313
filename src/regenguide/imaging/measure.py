"""Calibrated measurements on ultrasound images, returned as observation records.

- Dermal and subcutaneous thickness along a scan line: the intensity profile along the line
  (averaged over a band across it to tame speckle) is split into layers semi-automatically; every
  boundary can be replaced by the clinician's value and the record says which were edited.
- Distance between two points, area of a traced polygon, volume from parallel traced slices
  (Cavalieri: spacing × Σ areas, `imaging.cavalieri-gundersen-1987`) or from three diameters of an
  ellipsoid (π/6·L·W·H, exact geometry).

All lengths use the pixel size of the image (`Calibration`); without one, `CalibrationMissing`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from regenguide.imaging.dicom_io import Calibration, ImagingError, require_calibration
from regenguide.imaging.refs import ImageReference

OBSERVATION_SYSTEM = "urn:regenguide:imaging"
Point = tuple[float, float]  # (x, y) pixels


class Observation(BaseModel):
    """An observation-like record (code, value, unit) the store can keep as a FHIR Observation."""

    model_config = ConfigDict(extra="forbid")

    code: str
    system: str = OBSERVATION_SYSTEM
    display: str
    value: float
    unit: str = Field(description="UCUM unit: mm, mm2, mL")
    method: str
    image: ImageReference | None = None
    geometry: dict[str, object] = Field(default_factory=dict, description="points/lines in pixels")
    edited: bool = Field(default=False, description="a boundary or point was set by the user")


# --- basic geometry -----------------------------------------------------------------------------


def _cal(calibration: Calibration | None) -> Calibration:
    return require_calibration(calibration)


def distance_mm(p: Point, q: Point, calibration: Calibration | None) -> float:
    """Euclidean distance in mm with (possibly anisotropic) pixel size."""
    cal = _cal(calibration)
    return math.hypot((q[0] - p[0]) * cal.mm_per_px_x, (q[1] - p[1]) * cal.mm_per_px_y)


def polygon_area_mm2(points: Sequence[Point], calibration: Calibration | None) -> float:
    """Area of a simple polygon traced in pixels (shoelace formula on the calibrated vertices).

    Written by hand: the shoelace formula is three lines and a geometry library would add a
    dependency for nothing. Self-intersecting traces are refused.
    """
    cal = _cal(calibration)
    if len(points) < 3:
        raise ImagingError(f"an area needs at least 3 points, got {len(points)}")
    xy = np.asarray(points, dtype=float) * (cal.mm_per_px_x, cal.mm_per_px_y)
    if _self_intersects(xy):
        raise ImagingError("the traced outline crosses itself; trace a simple closed outline")
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _self_intersects(xy: np.ndarray) -> bool:
    """Proper crossing of any two non-adjacent edges (all pairs at once with numpy)."""
    n = len(xy)
    if n < 4:
        return False
    a, b = xy, np.roll(xy, -1, axis=0)

    def orient(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
        return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (
            r[..., 0] - p[..., 0]
        )

    ai, bi = a[:, None, :], b[:, None, :]
    cj, dj = a[None, :, :], b[None, :, :]
    crossing = (orient(ai, bi, cj) * orient(ai, bi, dj) < 0) & (orient(cj, dj, ai) * orient(cj, dj, bi) < 0)
    i, j = np.triu_indices(n, k=2)
    keep = ~((i == 0) & (j == n - 1))  # first and last edges share a vertex
    return bool(crossing[i[keep], j[keep]].any())


def volume_from_slices_ml(areas_mm2: Sequence[float], spacing_mm: float) -> float:
    """Cavalieri estimate: spacing × Σ section areas (`imaging.cavalieri-gundersen-1987`), in mL."""
    if spacing_mm <= 0:
        raise ImagingError("slice spacing must be positive")
    if not areas_mm2:
        raise ImagingError("at least one traced slice is needed")
    if any(a < 0 for a in areas_mm2):
        raise ImagingError("slice areas cannot be negative")
    return float(spacing_mm * sum(areas_mm2) / 1000.0)


def ellipsoid_volume_ml(length_mm: float, width_mm: float, height_mm: float) -> float:
    """Volume of an ellipsoid from its three diameters: π/6 · L · W · H (mm³ → mL)."""
    if min(length_mm, width_mm, height_mm) <= 0:
        raise ImagingError("ellipsoid diameters must be positive")
    return float(math.pi / 6.0 * length_mm * width_mm * height_mm / 1000.0)


# --- records ------------------------------------------------------------------------------------


def distance_observation(
    p: Point, q: Point, calibration: Calibration | None, image: ImageReference | None = None
) -> Observation:
    return Observation(
        code="distance",
        display="Distance between two points",
        value=distance_mm(p, q, calibration),
        unit="mm",
        method="calibrated Euclidean distance",
        image=image,
        geometry={"points_px": [list(p), list(q)]},
        edited=True,
    )


def area_observation(
    points: Sequence[Point], calibration: Calibration | None, image: ImageReference | None = None
) -> Observation:
    return Observation(
        code="deposit-area",
        display="Area of a traced deposit",
        value=polygon_area_mm2(points, calibration),
        unit="mm2",
        method="shoelace area of the traced outline",
        image=image,
        geometry={"polygon_px": [list(p) for p in points]},
        edited=True,
    )


def slices_volume_observation(
    slices: Sequence[Sequence[Point]],
    spacing_mm: float,
    calibration: Calibration | None,
    images: Sequence[ImageReference] | None = None,
) -> Observation:
    areas = [polygon_area_mm2(s, calibration) for s in slices]
    return Observation(
        code="deposit-volume",
        display="Volume of a deposit from parallel traced slices",
        value=volume_from_slices_ml(areas, spacing_mm),
        unit="mL",
        method="Cavalieri: slice spacing x sum of traced areas (imaging.cavalieri-gundersen-1987)",
        image=images[0] if images else None,
        geometry={"slice_areas_mm2": areas, "spacing_mm": spacing_mm, "slices": len(areas)},
        edited=True,
    )


def ellipsoid_volume_observation(
    length_mm: float, width_mm: float, height_mm: float, image: ImageReference | None = None
) -> Observation:
    return Observation(
        code="deposit-volume",
        display="Volume of a deposit as an ellipsoid",
        value=ellipsoid_volume_ml(length_mm, width_mm, height_mm),
        unit="mL",
        method="ellipsoid pi/6 x L x W x H",
        image=image,
        geometry={"diameters_mm": [length_mm, width_mm, height_mm]},
        edited=True,
    )


# --- thickness along a scan line ----------------------------------------------------------------


class ScanLine(BaseModel):
    """A line from the skin surface downwards, in pixels; `band_px` is the width averaged across it."""

    model_config = ConfigDict(extra="forbid")

    start: Point
    end: Point
    band_px: int = Field(default=21, ge=1, le=201)

    @property
    def length_px(self) -> float:
        return math.hypot(self.end[0] - self.start[0], self.end[1] - self.start[1])

    def point_at(self, t: float) -> Point:
        """Pixel position `t` samples (pixels) along the line from its start."""
        u = self.length_px
        return (
            self.start[0] + (self.end[0] - self.start[0]) * t / u,
            self.start[1] + (self.end[1] - self.start[1]) * t / u,
        )


def intensity_profile(image: np.ndarray, line: ScanLine) -> np.ndarray:
    """Grey level along the line at one-pixel steps, averaged over `band_px` parallel lines."""
    grey = image.max(axis=2) if image.ndim == 3 else image
    grey = grey.astype(np.float64)
    length = line.length_px
    if length < 8:
        raise ImagingError("the scan line is shorter than 8 pixels")
    n = int(length) + 1
    t = np.arange(n, dtype=float)
    ux = (line.end[0] - line.start[0]) / length
    uy = (line.end[1] - line.start[1]) / length
    offsets = np.arange(line.band_px, dtype=float) - (line.band_px - 1) / 2.0
    xs = line.start[0] + t[None, :] * ux + offsets[:, None] * (-uy)
    ys = line.start[1] + t[None, :] * uy + offsets[:, None] * ux
    h, w = grey.shape
    if xs.min() < 0 or ys.min() < 0 or xs.max() > w - 1 or ys.max() > h - 1:
        raise ImagingError(f"the scan line (with its {line.band_px}-pixel band) leaves the {w}x{h} image")
    samples = ndimage.map_coordinates(grey, [ys.ravel(), xs.ravel()], order=1).reshape(xs.shape)
    return samples.mean(axis=0)


def _segment(profile: np.ndarray, k: int) -> list[int]:
    """Exact least-squares piecewise-constant fit with `k` segments (dynamic programming).

    Returns the segment start indices (first is 0). Written by hand: O(k·n²) in numpy for a few
    hundred samples is instant, and a change-point package would be a dependency for 20 lines.
    """
    n = profile.size
    k = max(1, min(k, n))
    c1 = np.concatenate([[0.0], np.cumsum(profile)])
    c2 = np.concatenate([[0.0], np.cumsum(profile**2)])
    i = np.arange(n + 1)
    # cost[a, b] = SSE of profile[a:b] around its mean (inf where b <= a)
    a_idx, b_idx = np.meshgrid(i, i, indexing="ij")
    length = (b_idx - a_idx).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = c1[b_idx] - c1[a_idx]
        cost = (c2[b_idx] - c2[a_idx]) - np.where(length > 0, s * s / length, 0.0)
    cost[length <= 0] = np.inf
    best = cost[0].copy()  # best[b]: one segment covering [0, b)
    back = np.zeros((k, n + 1), dtype=int)
    for seg in range(1, k):
        total = best[:, None] + cost  # split at a: best[a] + cost[a, b]
        back[seg] = np.argmin(total, axis=0)
        best = total[back[seg], i]
    starts = []
    b = n
    for seg in range(k - 1, 0, -1):
        a = int(back[seg][b])
        starts.append(a)
        b = a
    return [0] + sorted(set(starts) - {0})


def _crossing(s: np.ndarray, start: int, stop: int, threshold: float, rising: bool) -> float | None:
    """First sub-sample position in [start, stop) where `s` crosses `threshold`."""
    for j in range(max(start, 1), min(stop, s.size)):
        a, b = s[j - 1], s[j]
        if (rising and a < threshold <= b) or (not rising and a > threshold >= b):
            return float(j - 1 + (threshold - a) / (b - a)) if b != a else float(j)
    return None


class LayerBoundaries(BaseModel):
    """Positions along the scan line, in samples (pixels) from its start."""

    model_config = ConfigDict(extra="forbid")

    skin: float | None = None
    dermis_bottom: float | None = None
    fascia: float | None = None
    source: dict[str, Literal["auto", "user"]] = Field(default_factory=dict)


def detect_layer_boundaries(profile: np.ndarray, segments: int = 10) -> LayerBoundaries:
    """Skin surface, dermis/subcutis junction and the fascia from an intensity profile.

    Echo pattern of skin on ultrasound (`seed-review-2026`): a dark coupling gel, the bright
    entrance echo and dermis, the darker subcutaneous fat, then the bright fascia line. The profile
    is fitted with piecewise-constant levels; the dermis is the first bright level after the skin,
    the subcutis the next darker level, the fascia the next level at least three quarters of the
    way back up to the dermis (fainter fibrous septa do not count). Each boundary is the half-way
    crossing between the two levels on the smoothed profile.
    """
    s = ndimage.gaussian_filter1d(np.asarray(profile, dtype=float), 2.0, mode="nearest")
    out = LayerBoundaries()
    if s.size < 8:
        return out
    top = float(np.min(s[: max(2, s.size // 20)]))
    tissue = float(np.percentile(s, 75))
    if tissue - top < 10.0:
        return out
    skin = _crossing(s, 0, s.size, top + 0.5 * (tissue - top), rising=True)
    if skin is None:
        return out
    out.skin, out.source["skin"] = skin, "auto"
    start = int(math.ceil(skin))
    rest = s[start:]
    if rest.size < 6:
        return out
    starts = _segment(rest, segments)
    bounds = starts[1:] + [rest.size]
    levels = [float(np.mean(rest[a:b])) for a, b in zip(starts, bounds, strict=True)]
    # Dermis: brightest level among the first segments until the level first falls clearly.
    dermis_level = levels[0]
    sub_index = None
    for j in range(1, len(levels)):
        dermis_level = max(dermis_level, levels[j - 1])
        if levels[j] < levels[j - 1] and (j + 1 == len(levels) or levels[j] <= levels[j + 1]):
            sub_index = j
            break
    if sub_index is None:
        return out
    sub_level = levels[sub_index]
    if dermis_level - sub_level < 5.0:
        return out
    derm_bottom = _crossing(s, start, s.size, 0.5 * (dermis_level + sub_level), rising=False)
    if derm_bottom is None:
        return out
    out.dermis_bottom, out.source["dermis_bottom"] = derm_bottom, "auto"
    fascia_min = sub_level + 0.75 * (dermis_level - sub_level)
    for j in range(sub_index + 1, len(levels)):
        if levels[j] >= fascia_min:
            low = min(levels[sub_index:j])
            fascia = _crossing(s, start + starts[sub_index], s.size, 0.5 * (low + levels[j]), rising=True)
            if fascia is not None and fascia > derm_bottom:
                out.fascia, out.source["fascia"] = fascia, "auto"
            break
    return out


class ThicknessMeasurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: ScanLine
    boundaries: LayerBoundaries
    boundaries_px: dict[str, Point] = Field(description="image position of each boundary")
    observations: list[Observation]
    warnings: list[str] = Field(default_factory=list)


def measure_thickness(
    image: np.ndarray,
    line: ScanLine,
    calibration: Calibration | None,
    *,
    overrides: dict[str, float] | None = None,
    image_ref: ImageReference | None = None,
) -> ThicknessMeasurement:
    """Dermal (skin surface → dermis/subcutis junction, epidermis included) and subcutaneous
    (junction → fascia) thickness along `line`, in mm.

    `overrides` maps 'skin', 'dermis_bottom' or 'fascia' to a position along the line (pixels
    from its start) chosen by the clinician; it replaces the automatic boundary.
    """
    cal = _cal(calibration)
    profile = intensity_profile(image, line)
    boundaries = detect_layer_boundaries(profile)
    for name, value in (overrides or {}).items():
        if name not in ("skin", "dermis_bottom", "fascia"):
            raise ImagingError(f"unknown boundary {name!r}; use skin, dermis_bottom or fascia")
        if not 0 <= value <= line.length_px:
            raise ImagingError(
                f"boundary {name!r} at {value} px is outside the line (0..{line.length_px:.1f})"
            )
        setattr(boundaries, name, float(value))
        boundaries.source[name] = "user"
    ux = (line.end[0] - line.start[0]) / line.length_px
    uy = (line.end[1] - line.start[1]) / line.length_px
    mm_per_sample = math.hypot(ux * cal.mm_per_px_x, uy * cal.mm_per_px_y)
    positions = {
        name: line.point_at(value)
        for name in ("skin", "dermis_bottom", "fascia")
        if (value := getattr(boundaries, name)) is not None
    }
    observations: list[Observation] = []
    warnings: list[str] = []
    pairs = [
        (
            "dermal-thickness",
            "Dermal thickness (entrance echo to dermis/subcutis junction)",
            "skin",
            "dermis_bottom",
        ),
        ("subcutaneous-thickness", "Subcutaneous thickness (junction to fascia)", "dermis_bottom", "fascia"),
    ]
    for code, display, top, bottom in pairs:
        a, b = getattr(boundaries, top), getattr(boundaries, bottom)
        if a is None or b is None:
            warnings.append(f"{code}: boundary {top if a is None else bottom!r} not found; set it by hand")
            continue
        if b <= a:
            warnings.append(f"{code}: boundary {bottom!r} is not below {top!r}")
            continue
        edited = boundaries.source.get(top) == "user" or boundaries.source.get(bottom) == "user"
        observations.append(
            Observation(
                code=code,
                display=display,
                value=(b - a) * mm_per_sample,
                unit="mm",
                method="intensity profile along a scan line"
                + (", boundary edited by the user" if edited else ""),
                image=image_ref,
                geometry={
                    "line_px": [list(line.start), list(line.end)],
                    top: list(positions[top]),
                    bottom: list(positions[bottom]),
                },
                edited=edited,
            )
        )
    return ThicknessMeasurement(
        line=line,
        boundaries=boundaries,
        boundaries_px=positions,
        observations=observations,
        warnings=warnings,
    )
