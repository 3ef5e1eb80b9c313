"""Colour-Doppler flow extraction: coloured pixels over grey B-mode → vessel cross-sections.

Rule (citation `imaging.colour-doppler-practice`): B-mode is grey (R = G = B), flow is any pixel
with HSV saturation and value above the thresholds in `kb/data/imaging/doppler.yaml`, counted only
inside the analysed box (the colour-flow region, else the tissue region, else the B-mode area found
in the image) with colour bars removed. Hue gives the direction under the default colour map
(red/yellow towards the transducer, blue away; `imaging.colour-doppler-bart`); a power-Doppler map
has no direction. Connected blobs (scipy.ndimage.label) are vessel cross-sections: centre, depth of
the centre below the skin line, and the diameter of the circle of equal area.

Saturation and value are computed with integer numpy on the whole frame and hue only on the flow
pixels, instead of `skimage.color.rgb2hsv`: the latter converts every pixel to float64 HSV, which
costs several times the whole 60 fps budget at 640x480 while giving the same mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from regenguide.imaging.config import DopplerConfig, doppler_config
from regenguide.imaging.dicom_io import Calibration, ImagingError, StudyMetadata
from regenguide.imaging.enums import DopplerMode, FlowDirection

Box = tuple[int, int, int, int]  # half-open (x0, y0, x1, y1)


class VesselSection(BaseModel):
    """One connected flow blob, taken as a vessel cross-section."""

    model_config = ConfigDict(extra="forbid")

    label: int
    centroid_px: tuple[float, float] = Field(description="(x, y) in pixels")
    bbox_px: Box
    area_px: int
    diameter_px: float = Field(description="diameter of the circle of equal area")
    depth_px: float | None = Field(description="centre depth below the skin line, pixels")
    depth_mm: float | None = None
    diameter_mm: float | None = None
    area_mm2: float | None = None
    direction: FlowDirection
    towards_fraction: float
    away_fraction: float


class FlowResult(BaseModel):
    """Doppler extraction of one frame; JSON-ready (`model_dump(mode='json')`)."""

    model_config = ConfigDict(extra="forbid")

    frame: int = 0
    mode: DopplerMode = DopplerMode.color
    flow_pixels: int
    analysed_pixels: int
    flow_fraction: float
    box: Box
    box_source: Literal["argument", "color_flow_region", "tissue_region", "auto"]
    colour_bars: list[Box] = Field(default_factory=list)
    skin_line_px: float | None = None
    skin_line_source: Literal["argument", "detected", "box_top"] | None = None
    calibration: Calibration | None = None
    vessels: list[VesselSection] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


@dataclass
class FlowAnalysis:
    """The result plus the pixel masks, for overlays and further image work."""

    result: FlowResult
    flow_mask: np.ndarray  # bool (H, W): flow pixels counted
    labels: np.ndarray  # int32 (H, W): vessel label per pixel, 0 elsewhere
    analysed_mask: np.ndarray  # bool (H, W)


# --- pixel classification ----------------------------------------------------------------------


def _max_min(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Element-wise maximum over the three channel views is several times faster than
    # rgb.max(axis=2), which reduces along the short, strided last axis.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)


def _mask_from(mx: np.ndarray, mn: np.ndarray, config: DopplerConfig) -> np.ndarray:
    cfg = config.segmentation
    # S > S0  <=>  den·(max-min) > num·max with S0 = num/den; uint16 holds 100·255 without overflow.
    ratio = Fraction(cfg.min_saturation).limit_denominator(100)
    chroma = np.subtract(mx, mn, dtype=np.uint16)
    chroma *= ratio.denominator
    scaled = np.multiply(mx, ratio.numerator, dtype=np.uint16)
    return (mx > cfg.min_value * 255.0) & (chroma > scaled)


def colour_mask(rgb: np.ndarray, config: DopplerConfig | None = None) -> np.ndarray:
    """Boolean mask of coloured pixels: HSV S > min_saturation and V > min_value.

    With V = max/255 and S = (max - min)/max this is `1000·(max-min) > 1000·S0·max` and
    `max > 255·V0`, evaluated in integers, so the result equals skimage's rgb2hsv thresholds.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImagingError(f"expected an RGB frame (H, W, 3), got shape {rgb.shape}")
    mx, mn = _max_min(rgb)
    return _mask_from(mx, mn, config or doppler_config())


def hue_degrees(pixels: np.ndarray) -> np.ndarray:
    """HSV hue in degrees [0, 360) of an (N, 3) RGB array (grey pixels get 0)."""
    p = pixels.astype(np.float32)
    r, g, b = p[:, 0], p[:, 1], p[:, 2]
    mx = p.max(axis=1)
    c = mx - p.min(axis=1)
    safe = np.where(c == 0, 1.0, c)
    h = np.where(
        mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)
    )
    h = np.where(c == 0, 0.0, h) * 60.0
    return np.mod(h, 360.0)


def _in_ranges(hue: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    out = np.zeros(hue.shape, dtype=bool)
    for lo, hi in ranges:
        out |= (hue >= lo) & (hue < hi)
    return out


# --- analysed area -----------------------------------------------------------------------------


def _clip_box(box: Box, shape: tuple[int, ...]) -> Box:
    h, w = shape[:2]
    x0, y0, x1, y1 = box
    x0, x1 = max(0, min(w, x0)), max(0, min(w, x1))
    y0, y1 = max(0, min(h, y0)), max(0, min(h, y1))
    if x1 <= x0 or y1 <= y0:
        raise ImagingError(f"analysis box {box} is empty inside a {w}x{h} image")
    return (x0, y0, x1, y1)


def bmode_area(rgb: np.ndarray) -> np.ndarray:
    """The B-mode display area of a frame without region metadata.

    B-mode speckle is a dense field of mid-grey pixels, while burned-in text is sparse strokes on
    black and icons are small: the area is the largest blob where at least 60% of a ~16x16
    neighbourhood is mid-grey (12..200, channels within 16 levels), with holes (dark lumens, colour
    flow) filled; coloured banners and panels are not grey, so they are not taken for the image.
    """
    h, w = rgb.shape[:2]
    # Worked out on a 2x2-decimated frame (4x fewer pixels; the area is a coarse shape anyway).
    mx, mn = _max_min(rgb[::2, ::2])
    # Grey (R = G = B within 16 levels) and mid-level: speckle, not text, banners or colour.
    mid = (mx >= 12) & (mx <= 200) & (mx.astype(np.int16) - mn <= 16)
    density = ndimage.uniform_filter(mid.astype(np.float32), 8)
    labels, count = ndimage.label(density > 0.6)
    if count == 0:
        return np.zeros((h, w), dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    small = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))
    return np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)[:h, :w]


def _choose_box(
    rgb: np.ndarray, metadata: StudyMetadata | None, box: Box | None
) -> tuple[Box, str, np.ndarray | None, Box | None]:
    """Return (box, source, area mask or None, tissue box for the skin line or None)."""
    tissue: Box | None = None
    if metadata is not None:
        usable = [r for r in metadata.regions if r.fits_image and r.spatial_format == 1]
        tissue_regions = [r for r in usable if r.is_tissue]
        if tissue_regions:
            tissue = tissue_regions[0].box
        if box is None:
            flow_regions = [r for r in usable if r.is_color_flow]
            if flow_regions:
                return _clip_box(flow_regions[0].box, rgb.shape), "color_flow_region", None, tissue
            if tissue is not None:
                return _clip_box(tissue, rgb.shape), "tissue_region", None, tissue
    if box is not None:
        return _clip_box(box, rgb.shape), "argument", None, tissue
    area = bmode_area(rgb)
    if not area.any():  # no grey B-mode field (e.g. a crop of the colour box): analyse everything
        return (0, 0, rgb.shape[1], rgb.shape[0]), "auto", None, tissue
    ys = np.flatnonzero(area.any(axis=1))
    xs = np.flatnonzero(area.any(axis=0))
    found = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
    return found, "auto", area, tissue


def _bar_orientation(bar: np.ndarray, mask: np.ndarray, cfg: DopplerConfig) -> int:
    """+1 if the bar's top third is towards-coloured and its bottom third away-coloured (default
    map), -1 for the reverse (inverted map), 0 otherwise (e.g. a power-Doppler scale)."""
    h = bar.shape[0]
    third = max(1, h // 3)

    def share(part: np.ndarray, part_mask: np.ndarray) -> tuple[float, float]:
        pixels = part[part_mask]
        if pixels.size == 0:
            return (0.0, 0.0)
        hue = hue_degrees(pixels)
        return (
            float(_in_ranges(hue, cfg.direction.towards_hue_deg).mean()),
            float(_in_ranges(hue, cfg.direction.away_hue_deg).mean()),
        )

    top_t, top_a = share(bar[:third], mask[:third])
    bot_t, bot_a = share(bar[h - third :], mask[h - third :])
    if top_t > 0.5 and bot_a > 0.5:
        return 1
    if top_a > 0.5 and bot_t > 0.5:
        return -1
    return 0


def find_colour_bars(
    labels: np.ndarray, count: int, config: DopplerConfig | None = None
) -> list[tuple[int, Box]]:
    """Colour scales drawn on the image: tall, near-solid rectangles of coloured pixels."""
    cfg = (config or doppler_config()).colour_bar
    bars: list[tuple[int, Box]] = []
    for index, sl in enumerate(ndimage.find_objects(labels, max_label=count), start=1):
        if sl is None:
            continue
        h = sl[0].stop - sl[0].start
        w = sl[1].stop - sl[1].start
        if h < cfg.min_height_px or h < cfg.min_aspect * w:
            continue
        fill = float(np.count_nonzero(labels[sl] == index)) / (h * w)
        if fill >= cfg.min_fill:
            bars.append((index, (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)))
    return bars


# --- skin line ---------------------------------------------------------------------------------


def detect_skin_line(
    rgb: np.ndarray, box: Box, flow: np.ndarray | None = None, value: np.ndarray | None = None
) -> float | None:
    """Row (float, sub-pixel) of the skin surface inside `box`: the first rise of the mean grey
    profile to half-way between the dark top (gel / probe face) and the tissue level.

    The entrance echo of the epidermis is the first bright interface under the transducer; flow
    pixels are left out of the row means. Returns None when the profile has no such rise.
    """
    x0, y0, x1, y1 = box
    # HSV value (max channel) equals the grey level on grey pixels; flow pixels are left out.
    # `value` may be the max-channel image of the whole frame, to avoid computing it twice.
    grey = value[y0:y1, x0:x1] if value is not None else _max_min(rgb[y0:y1, x0:x1])[0]
    sums = grey.sum(axis=1, dtype=np.float64)
    counts = np.full(sums.shape, float(x1 - x0))
    if flow is not None:
        # Subtract the flow pixels row by row (few pixels) instead of masking the whole box.
        fy, fx = np.nonzero(flow[y0:y1, x0:x1])
        sums -= np.bincount(fy, weights=grey[fy, fx], minlength=sums.size)
        counts -= np.bincount(fy, minlength=sums.size)
    profile = np.divide(sums, counts, out=np.zeros(sums.shape), where=counts > 0)
    if profile.size < 4:
        return None
    profile = ndimage.uniform_filter1d(profile, size=3, mode="nearest")
    top = float(np.min(profile[: max(2, profile.size // 20)]))
    tissue = float(np.percentile(profile, 75))
    if tissue - top < 10.0:  # no contrast between the top and the tissue: no visible surface
        return None
    threshold = top + 0.5 * (tissue - top)
    above = np.flatnonzero(profile >= threshold)
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(y0)
    a, b = float(profile[i - 1]), float(profile[i])
    frac = (threshold - a) / (b - a) if b != a else 0.0
    return float(y0 + i - 1 + frac)


# --- main entry points ------------------------------------------------------------------------


def analyse_frame(
    rgb: np.ndarray,
    *,
    metadata: StudyMetadata | None = None,
    calibration: Calibration | None = None,
    box: Box | None = None,
    skin_line_px: float | None = None,
    mode: DopplerMode | str = DopplerMode.color,
    frame: int = 0,
    area: np.ndarray | None = None,
    config: DopplerConfig | None = None,
) -> FlowAnalysis:
    """Extract flow pixels and vessel cross-sections from one RGB frame.

    `metadata` supplies the ultrasound regions and calibration (an explicit `calibration` wins);
    `box` (half-open x0, y0, x1, y1) overrides the regions; `area` is a precomputed B-mode area
    mask to reuse across the frames of one cine; `skin_line_px` overrides the detected skin line.
    """
    cfg = config or doppler_config()
    mode = DopplerMode(mode)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImagingError(f"expected an RGB frame (H, W, 3), got shape {rgb.shape}")
    warnings: list[str] = []
    calib = calibration if calibration is not None else (metadata.calibration if metadata else None)
    if area is not None:
        ys = np.flatnonzero(area.any(axis=1))
        xs = np.flatnonzero(area.any(axis=0))
        if ys.size:
            chosen: Box = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
        else:
            chosen = (0, 0, rgb.shape[1], rgb.shape[0])
        source, tissue_box = "auto", None
        area_mask: np.ndarray | None = area
    else:
        chosen, source, area_mask, tissue_box = _choose_box(rgb, metadata, box)
    if source == "auto" and area_mask is None:
        warnings.append("no B-mode area found in the image: the whole image was analysed")
    x0, y0, x1, y1 = chosen
    sub = rgb[y0:y1, x0:x1]
    full_mx, full_mn = _max_min(rgb)
    mx, mn = full_mx[y0:y1, x0:x1], full_mn[y0:y1, x0:x1]
    coloured = _mask_from(mx, mn, cfg)
    analysed = np.ones(coloured.shape, dtype=bool) if area_mask is None else area_mask[y0:y1, x0:x1].copy()
    structure = np.ones((3, 3), bool) if cfg.components.connectivity == 8 else None
    # A scanner's colour-flow region is the colour box itself, with the scale drawn outside it,
    # so the colour-bar search is skipped there (it is the costliest step of a frame).
    bars: list[Box] = []
    found: list[tuple[int, Box]] = []
    bar_labels: np.ndarray | None = None
    bar_count = 0
    if source != "color_flow_region":
        # Colour bars are found on a mask closed by one row, because a scale's zero (baseline) row
        # is dark and would split the bar in two squat halves. (Same as a binary closing with a
        # 3x1 column, done with two shifted ANDs for speed.)
        bar_mask = coloured.copy()
        bar_mask[1:-1] |= coloured[:-2] & coloured[2:]
        bar_labels, bar_count = ndimage.label(bar_mask, structure=np.ones((3, 3), bool))
        found = find_colour_bars(bar_labels, bar_count, cfg)
    inverted_votes = 0
    for _, (bx0, by0, bx1, by1) in found:
        # The bar and a 2-pixel frame around it (its outline and tick marks) are not analysed.
        analysed[max(0, by0 - 2) : by1 + 2, max(0, bx0 - 2) : bx1 + 2] = False
        bars.append((bx0 + x0, by0 + y0, bx1 + x0, by1 + y0))
        if cfg.direction.read_colour_bar:
            inverted_votes += _bar_orientation(sub[by0:by1, bx0:bx1], coloured[by0:by1, bx0:bx1], cfg)
    inverted = mode is DopplerMode.color and inverted_votes < 0
    if inverted:
        warnings.append("the colour bar has blue on top: inverted colour map, directions swapped")
    if area_mask is not None and bar_labels is not None and bar_count:
        # A coloured shape lying mostly outside the B-mode area is screen graphics (a colour scale the
        # bar test missed, e.g. a power scale split by its dark baseline, or an icon), even where
        # the coarse area mask overlaps its edge by a pixel or two: it is left out whole. Flow lies
        # inside the B-mode image (the area's holes are filled), so a vessel is never dropped here.
        inside = np.bincount(bar_labels[analysed], minlength=bar_count + 1)
        total = np.bincount(bar_labels.ravel(), minlength=bar_count + 1)
        outside = inside * 2 < total
        outside[0] = False
        straddling = outside[bar_labels] & analysed
        if straddling.any():
            analysed &= ~straddling
    flow = coloured & analysed
    # Blobs below the minimum area are noise (isolated chroma errors of lossy compression), not flow.
    labels, count = ndimage.label(flow, structure=structure)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    small = sizes < cfg.components.min_area_px
    small[0] = True
    kept = np.flatnonzero(~small)
    new_ids = np.zeros(count + 1, dtype=np.int32)
    new_ids[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    relabelled = new_ids[labels]
    flow = relabelled > 0

    full_flow = np.zeros(rgb.shape[:2], dtype=bool)
    full_flow[y0:y1, x0:x1] = flow
    full_labels = np.zeros(rgb.shape[:2], dtype=np.int32)
    full_analysed = np.zeros(rgb.shape[:2], dtype=bool)
    full_analysed[y0:y1, x0:x1] = analysed

    skin_source: Literal["argument", "detected", "box_top"] | None
    if skin_line_px is not None:
        skin, skin_source = float(skin_line_px), "argument"
    else:
        skin_box = tissue_box if tissue_box is not None else chosen
        detected = detect_skin_line(rgb, skin_box, full_flow, full_mx)
        if detected is None:
            skin, skin_source = float(skin_box[1]), "box_top"
            warnings.append(
                "no skin surface echo found; depths are measured from the top of the analysed box"
            )
        else:
            skin, skin_source = detected, "detected"

    vessels: list[VesselSection] = []
    if kept.size:
        full_labels[y0:y1, x0:x1] = relabelled
        vessels = _vessels(sub, relabelled, int(kept.size), (x0, y0), skin, calib, mode, cfg, inverted)
    if calib is None:
        warnings.append("no calibration: depths and diameters in mm are null")
    flow_pixels = int(np.count_nonzero(flow))
    analysed_pixels = int(np.count_nonzero(analysed))
    result = FlowResult(
        frame=frame,
        mode=mode,
        flow_pixels=flow_pixels,
        analysed_pixels=analysed_pixels,
        flow_fraction=flow_pixels / analysed_pixels if analysed_pixels else 0.0,
        box=chosen,
        box_source=source,  # type: ignore[arg-type]
        colour_bars=bars,
        skin_line_px=skin,
        skin_line_source=skin_source,
        calibration=calib,
        vessels=vessels,
        warnings=warnings,
    )
    return FlowAnalysis(result=result, flow_mask=full_flow, labels=full_labels, analysed_mask=full_analysed)


def _vessels(
    sub: np.ndarray,
    labels: np.ndarray,
    count: int,
    offset: tuple[int, int],
    skin: float,
    calib: Calibration | None,
    mode: DopplerMode,
    cfg: DopplerConfig,
    inverted: bool = False,
) -> list[VesselSection]:
    index = np.arange(1, count + 1)
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    area = np.bincount(lab, minlength=count + 1)[1:]
    cy = np.bincount(lab, weights=ys, minlength=count + 1)[1:] / area
    cx = np.bincount(lab, weights=xs, minlength=count + 1)[1:] / area
    hue = hue_degrees(sub[ys, xs])
    towards = np.bincount(lab, weights=_in_ranges(hue, cfg.direction.towards_hue_deg), minlength=count + 1)[
        1:
    ]
    away = np.bincount(lab, weights=_in_ranges(hue, cfg.direction.away_hue_deg), minlength=count + 1)[1:]
    if inverted:
        towards, away = away, towards
    slices = ndimage.find_objects(labels, max_label=count)
    out: list[VesselSection] = []
    for i in range(count):
        sl = slices[i]
        assert sl is not None
        x = float(cx[i] + offset[0])
        y = float(cy[i] + offset[1])
        a = int(area[i])
        d_px = float(np.sqrt(4.0 * a / np.pi))
        t_frac = float(towards[i] / a)
        a_frac = float(away[i] / a)
        if mode is DopplerMode.power:
            direction = FlowDirection.undetermined
        else:
            classified = t_frac + a_frac
            if classified == 0:
                direction = FlowDirection.undetermined
            elif min(t_frac, a_frac) / classified >= cfg.direction.mixed_min_fraction:
                direction = FlowDirection.mixed
            else:
                direction = FlowDirection.towards if t_frac > a_frac else FlowDirection.away
        depth_px = y - skin
        depth_mm = diameter_mm = area_mm2 = None
        if calib is not None:
            depth_mm = depth_px * calib.mm_per_px_y
            area_mm2 = a * calib.mm_per_px_x * calib.mm_per_px_y
            diameter_mm = float(np.sqrt(4.0 * area_mm2 / np.pi))
        out.append(
            VesselSection(
                label=int(index[i]),
                centroid_px=(x, y),
                bbox_px=(
                    sl[1].start + offset[0],
                    sl[0].start + offset[1],
                    sl[1].stop + offset[0],
                    sl[0].stop + offset[1],
                ),
                area_px=a,
                diameter_px=d_px,
                depth_px=depth_px,
                depth_mm=depth_mm,
                diameter_mm=diameter_mm,
                area_mm2=area_mm2,
                direction=direction,
                towards_fraction=t_frac,
                away_fraction=a_frac,
            )
        )
    return out


def extract_flow(
    rgb: np.ndarray,
    *,
    metadata: StudyMetadata | None = None,
    calibration: Calibration | None = None,
    box: Box | None = None,
    skin_line_px: float | None = None,
    mode: DopplerMode | str = DopplerMode.color,
    frame: int = 0,
    area: np.ndarray | None = None,
    config: DopplerConfig | None = None,
) -> FlowResult:
    """`analyse_frame(...)` without the pixel masks (same arguments)."""
    return analyse_frame(
        rgb,
        metadata=metadata,
        calibration=calibration,
        box=box,
        skin_line_px=skin_line_px,
        mode=mode,
        frame=frame,
        area=area,
        config=config,
    ).result
