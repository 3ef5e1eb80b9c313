"""Closed-form steady state of zero-order O2 consumption in a slab, cylinder or sphere (vectorised).

Steady reaction-diffusion with zero-order consumption Q (mol cm^-3 s^-1) that stops where O2 runs out:

    D * (1/r^m) d/dr (r^m dC/dr) = Q * H(C),   C(R) = C0,   m = 0 slab, 1 cylinder, 2 sphere

Without an anoxic core, C(r) = C0 - Q (R^2 - r^2) / (2 (m+1) D); the centre reaches 0 at the critical size
R_c = sqrt(2 (m+1) D C0 / Q): slab half-thickness sqrt(2DC0/Q), cylinder sqrt(4DC0/Q), sphere sqrt(6DC0/Q).
A larger deposit has an anoxic core of radius rho where C = dC/dr = 0, and for r >= rho

    slab      C = (Q/D) (r - rho)^2 / 2
    cylinder  C = (Q/D) [ (r^2 - rho^2)/4 - (rho^2/2) ln(r/rho) ]
    sphere    C = (Q/D) (r - rho)^2 (r + 2 rho) / (6 r)

with rho fixed by C(R) = C0. These are RegenGuide's own derivations ([D] in the research notes), checked
against the numerical solver in tests. Roots are found by vectorised bisection (monotone functions, no
derivative singularity at rho -> 0, which Newton's method would have); SciPy's scalar root finders are not
vectorised over many deposits and draws, which is what the Monte Carlo needs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Geometry = Literal["slab", "cylinder", "sphere"]
GEOMETRY_EXPONENT: dict[str, int] = {"slab": 0, "cylinder": 1, "sphere": 2}
_ITERATIONS = 48  # bisection halvings: relative precision 2^-48 ~ 4e-15


def exponent(geometry: str) -> int:
    try:
        return GEOMETRY_EXPONENT[geometry]
    except KeyError:
        raise ValueError(f"unknown geometry {geometry!r}; use slab, cylinder or sphere") from None


def critical_radius(geometry: str, diffusivity: object, c0: object, consumption: object) -> np.ndarray:
    """Largest half-size (slab half-thickness, cylinder or sphere radius, cm) with no anoxic core."""
    m = exponent(geometry)
    return np.sqrt(2.0 * (m + 1) * np.asarray(diffusivity) * np.asarray(c0) / np.asarray(consumption))


def _g(m: int, r: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Profile shape: C(r) = (Q/D) g(r, rho) for r >= rho > 0."""
    if m == 0:
        return 0.5 * (r - rho) ** 2
    if m == 1:
        safe = np.where(rho > 0, rho, r)  # rho = 0 gives rho^2 * log(1) = 0
        return 0.25 * (r**2 - rho**2) - 0.5 * rho**2 * np.log(r / safe)
    return (r - rho) ** 2 * (r + 2.0 * rho) / (6.0 * r)


def _bisect_increasing(func, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Root of an increasing function on [lo, hi], elementwise."""
    lo = lo.copy()
    hi = hi.copy()
    for _ in range(_ITERATIONS):
        mid = 0.5 * (lo + hi)
        above = func(mid) > 0
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return 0.5 * (lo + hi)


def anoxic_core_radius(
    geometry: str, radius: object, diffusivity: object, c0: object, consumption: object
) -> np.ndarray:
    """Radius (cm) of the anoxic core of a deposit of half-size `radius` (0 when below critical size)."""
    m = exponent(geometry)
    radius, d, c0_, q = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (radius, diffusivity, c0, consumption))
    )
    k = q / d
    rc = np.sqrt(2.0 * (m + 1) * c0_ / k)
    core = radius > rc
    rho = np.zeros(radius.shape)
    if not np.any(core):
        return rho
    r_c, k_c, c_c = radius[core], k[core], c0_[core]
    if m == 0:
        rho[core] = r_c - np.sqrt(2.0 * c_c / k_c)
    else:
        # C(R; rho) decreases with rho; find rho with k*g(R, rho) = C0, i.e. increasing in -rho.
        rho[core] = _bisect_increasing(lambda x: c_c - k_c * _g(m, r_c, x), np.zeros_like(r_c), r_c.copy())
    return rho


def threshold_radius(
    geometry: str,
    radius: np.ndarray,
    rho: np.ndarray,
    k: np.ndarray,
    c0: np.ndarray,
    c_threshold: np.ndarray,
) -> np.ndarray:
    """Radius (cm) inside which C < c_threshold (the deposit's profile is increasing in r)."""
    m = exponent(geometry)
    radius, rho, k, c0, ct = np.broadcast_arrays(radius, rho, k, c0, c_threshold)
    out = np.zeros(radius.shape)
    core = rho > 0
    # No core: C = C_center + k r^2 / (2(m+1)).
    nc = ~core
    c_center = c0[nc] - k[nc] * radius[nc] ** 2 / (2.0 * (m + 1))
    r2 = (ct[nc] - c_center) * 2.0 * (m + 1) / k[nc]
    out[nc] = np.sqrt(np.clip(r2, 0.0, radius[nc] ** 2))
    if np.any(core):
        r_c, rho_c, k_c, c0_c, ct_c = radius[core], rho[core], k[core], c0[core], ct[core]
        ct_c = np.clip(ct_c, 0.0, c0_c)
        if m == 0:
            res = rho_c + np.sqrt(2.0 * ct_c / k_c)
        else:
            res = _bisect_increasing(lambda x: k_c * _g(m, x, rho_c) - ct_c, rho_c.copy(), r_c.copy())
        out[core] = np.clip(res, rho_c, r_c)
    return np.where(ct >= c0, radius, out)


def zone_radii(
    geometry: str,
    radius: object,
    *,
    diffusivity: object,
    c0: object,
    consumption: object,
    c_adipocyte: object,
    c_necrosis: object,
) -> dict[str, np.ndarray]:
    """Radii (cm) bounding the zones of a deposit of half-size `radius`, elementwise over broadcast inputs:
    `anoxic` (core radius), `necrotic` (C < c_necrosis inside), `survival_inner` (C >= c_adipocyte
    outside)."""
    arrays = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (radius, diffusivity, c0, consumption, c_adipocyte, c_necrosis))
    )
    r, d, c0_, q, ca, cn = (np.array(a) for a in arrays)
    k = q / d
    rho = anoxic_core_radius(geometry, r, d, c0_, q)
    r_nec = threshold_radius(geometry, r, rho, k, c0_, cn)
    r_ad = threshold_radius(geometry, r, rho, k, c0_, ca)
    r_nec = np.maximum(r_nec, rho)
    r_ad = np.maximum(r_ad, r_nec)
    return {"anoxic": rho, "necrotic": r_nec, "survival_inner": r_ad, "radius": r}


def zone_fractions(geometry: str, radii: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Volume fractions of the survival, regenerating and necrotic zones from `zone_radii` output."""
    m = exponent(geometry)
    r = radii["radius"]
    with np.errstate(divide="ignore", invalid="ignore"):
        f_nec = np.where(r > 0, (radii["necrotic"] / r) ** (m + 1), 0.0)
        f_in = np.where(r > 0, (radii["survival_inner"] / r) ** (m + 1), 0.0)
    return {"survival": 1.0 - f_in, "regenerating": f_in - f_nec, "necrotic": f_nec}


def profile(
    geometry: str, r: np.ndarray, radius: float, *, diffusivity: float, c0: float, consumption: float
) -> np.ndarray:
    """Closed-form concentration (mol/cm^3) at positions `r` (cm) of a deposit of half-size `radius`."""
    m = exponent(geometry)
    k = consumption / diffusivity
    rho = float(anoxic_core_radius(geometry, radius, diffusivity, c0, consumption))
    r = np.asarray(r, dtype=float)
    if rho <= 0:
        return c0 - k * (radius**2 - r**2) / (2.0 * (m + 1))
    rr = np.maximum(r, rho)
    return np.where(r <= rho, 0.0, k * _g(m, rr, np.full_like(rr, rho)))
