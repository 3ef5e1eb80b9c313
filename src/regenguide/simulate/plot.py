"""Plots of the O2 field with its zones (matplotlib, Agg backend: files only, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from regenguide.simulate.oxygen import CrossSection  # noqa: E402

ZONE_COLOURS = {"survival": "#4caf50", "regenerating": "#ffb300", "necrotic": "#b71c1c"}


def plot_radial(
    r_mm: np.ndarray,
    po2_mmhg: np.ndarray,
    *,
    geometry: str,
    adipocyte_threshold_mmhg: float,
    necrosis_threshold_mmhg: float,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """pO2 from the centre (0) to the edge of a deposit, with the three zones shaded."""
    r_mm = np.asarray(r_mm)
    po2 = np.asarray(po2_mmhg)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    zone = np.where(po2 >= adipocyte_threshold_mmhg, 0, np.where(po2 < necrosis_threshold_mmhg, 2, 1))
    names = ["survival", "regenerating", "necrotic"]
    for k, name in enumerate(names):
        mask = zone == k
        if mask.any():
            ax.fill_between(
                r_mm,
                0,
                po2.max() * 1.05,
                where=mask,
                color=ZONE_COLOURS[name],
                alpha=0.25,
                step="mid",
                label=f"{name} zone",
            )
    ax.plot(r_mm, po2, color="black", lw=1.6, label="pO2")
    ax.axhline(adipocyte_threshold_mmhg, color=ZONE_COLOURS["survival"], ls="--", lw=0.8)
    ax.axhline(necrosis_threshold_mmhg, color=ZONE_COLOURS["necrotic"], ls="--", lw=0.8)
    ax.set_xlabel("distance from centre (mm)" if geometry != "slab" else "distance from mid-plane (mm)")
    ax.set_ylabel("pO2 (mmHg)")
    ax.set_xlim(0, float(r_mm.max()))
    ax.set_ylim(0, float(po2.max()) * 1.05)
    ax.set_title(title or f"O2 in a {geometry} deposit (model prediction)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_cross_section(
    section: CrossSection,
    *,
    solubility: float,
    adipocyte_threshold_mmhg: float,
    necrosis_threshold_mmhg: float,
    path: str | Path,
    title: str | None = None,
) -> Path:
    """2-D pO2 map of strands in the recipient bed with zone contours and strand outlines."""
    po2 = section.concentration / solubility
    extent = (0.0, 10 * section.width_cm, 0.0, 10 * section.thickness_cm)
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=120)
    im = ax.imshow(po2, origin="lower", extent=extent, cmap="viridis", aspect="equal")
    ny, nx = po2.shape
    x = (np.arange(nx) + 0.5) * 10 * section.width_cm / nx
    y = (np.arange(ny) + 0.5) * 10 * section.thickness_cm / ny
    graft = np.where(section.label >= 0, po2, np.nan)
    for level, name in ((adipocyte_threshold_mmhg, "survival"), (necrosis_threshold_mmhg, "necrotic")):
        if np.nanmin(graft) < level < np.nanmax(po2):
            ax.contour(
                x,
                y,
                np.nan_to_num(graft, nan=np.nanmax(po2)),
                levels=[level],
                colors=ZONE_COLOURS[name],
                linewidths=1.2,
            )
    theta = np.linspace(0, 2 * np.pi, 100)
    for (cx, cy), r in zip(section.centers_cm, section.radii_cm, strict=True):
        ax.plot(10 * (cx + r * np.cos(theta)), 10 * (cy + r * np.sin(theta)), color="white", lw=0.6)
    fig.colorbar(im, ax=ax, label="pO2 (mmHg)")
    ax.set_xlabel("width (mm)")
    ax.set_ylabel("depth in bed (mm)")
    ax.set_title(
        title or "Strands in the recipient bed (green: survival edge, red: necrosis edge)", fontsize=9
    )
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
