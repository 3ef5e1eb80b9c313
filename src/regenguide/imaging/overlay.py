"""Overlay images so a clinician sees what the extraction and measurements found."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from regenguide.imaging.doppler import FlowAnalysis
from regenguide.imaging.measure import ThicknessMeasurement

_GREEN = (40, 255, 90)
_YELLOW = (255, 230, 0)
_WHITE = (255, 255, 255)
_MAGENTA = (255, 0, 200)
_CYAN = (0, 230, 255)


def _scale_for(shape: tuple[int, ...]) -> int:
    """Enlarge small images so that labels stay readable."""
    return 2 if max(shape[:2]) < 500 else 1


def flow_overlay(rgb: np.ndarray, analysis: FlowAnalysis) -> Image.Image:
    """Flow pixels outlined in green, each vessel as its equal-area circle with depth/diameter,
    the skin line in yellow, the analysed box in white, excluded colour bars crossed in magenta,
    and everything outside the analysed area dimmed."""
    result = analysis.result
    base = rgb.copy()
    base[~analysis.analysed_mask] = (base[~analysis.analysed_mask] * 0.35).astype(np.uint8)
    # Outline of the flow mask (pixels of the mask with a non-mask 4-neighbour).
    m = analysis.flow_mask
    edge = m & ~(
        np.pad(m, ((1, 0), (0, 0)))[:-1]
        & np.pad(m, ((0, 1), (0, 0)))[1:]
        & np.pad(m, ((0, 0), (1, 0)))[:, :-1]
        & np.pad(m, ((0, 0), (0, 1)))[:, 1:]
    )
    base[edge] = _GREEN
    k = _scale_for(rgb.shape)
    img = Image.fromarray(base).resize((rgb.shape[1] * k, rgb.shape[0] * k), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = result.box
    draw.rectangle((x0 * k, y0 * k, x1 * k - 1, y1 * k - 1), outline=_WHITE)
    for bx0, by0, bx1, by1 in result.colour_bars:
        draw.rectangle((bx0 * k, by0 * k, bx1 * k - 1, by1 * k - 1), outline=_MAGENTA)
        draw.line((bx0 * k, by0 * k, bx1 * k - 1, by1 * k - 1), fill=_MAGENTA)
        draw.line((bx0 * k, by1 * k - 1, bx1 * k - 1, by0 * k), fill=_MAGENTA)
    if result.skin_line_px is not None:
        y = result.skin_line_px * k
        for xs in range(x0 * k, x1 * k, 12):
            draw.line((xs, y, min(xs + 6, x1 * k), y), fill=_YELLOW, width=1)
        draw.text((x0 * k + 2, max(0, y - 12)), "skin", fill=_YELLOW)
    labelled = {v.label for v in sorted(result.vessels, key=lambda v: -v.area_px)[:12]}
    for v in result.vessels:
        cx, cy = v.centroid_px[0] * k, v.centroid_px[1] * k
        r = v.diameter_px / 2 * k
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=_CYAN)
        draw.line((cx - 3, cy, cx + 3, cy), fill=_CYAN)
        draw.line((cx, cy - 3, cx, cy + 3), fill=_CYAN)
        if v.label not in labelled:
            continue  # small blobs: circle only, so the labels of the main vessels stay legible
        if v.depth_mm is not None and v.diameter_mm is not None:
            text = f"#{v.label} {v.depth_mm:.1f}mm deep, d {v.diameter_mm:.1f}mm"
        else:
            text = f"#{v.label} {v.depth_px or 0:.0f}px deep, d {v.diameter_px:.0f}px"
        if v.direction.value not in ("undetermined",):
            text += f" {v.direction.value}"
        draw.text((cx + r + 3, cy - 6), text, fill=_CYAN)
    summary = (
        f"flow {result.flow_pixels} px ({100 * result.flow_fraction:.1f}%), {len(result.vessels)} vessel(s)"
    )
    if result.calibration is None:
        summary += ", no calibration"
    draw.text((4, img.height - 14), summary, fill=_WHITE)
    return img


def thickness_overlay(rgb: np.ndarray, measurement: ThicknessMeasurement) -> Image.Image:
    """The scan line and its boundaries with the measured thicknesses."""
    k = _scale_for(rgb.shape)
    img = Image.fromarray(rgb).resize((rgb.shape[1] * k, rgb.shape[0] * k), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    line = measurement.line
    draw.line((line.start[0] * k, line.start[1] * k, line.end[0] * k, line.end[1] * k), fill=_WHITE)
    colours = {"skin": _YELLOW, "dermis_bottom": _GREEN, "fascia": _MAGENTA}
    for name, (x, y) in measurement.boundaries_px.items():
        source = measurement.boundaries.source.get(name, "auto")
        draw.line((x * k - 10, y * k, x * k + 10, y * k), fill=colours[name], width=2)
        draw.text((x * k + 12, y * k - 6), f"{name} ({source})", fill=colours[name])
    text = ", ".join(f"{o.code} {o.value:.2f} {o.unit}" for o in measurement.observations) or "no thickness"
    draw.text((4, img.height - 14), text, fill=_WHITE)
    return img


def save_png(image: Image.Image, path: str | os.PathLike[str]) -> None:
    image.save(path, format="PNG")
