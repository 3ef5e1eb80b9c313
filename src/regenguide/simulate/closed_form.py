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
against the numerical solver in tests. The roots have explicit solutions, evaluated elementwise (so thousands
of deposits and Monte Carlo draws cost one pass of array arithmetic):

* sphere: with x = rho/R and s = (R_c/R)^2, (1-x)^2 (1+2x) = s is a cubic with the trigonometric root
  x = 1/2 + cos((arccos(2s-1) - 2 pi)/3); a threshold radius r >= rho solves the depressed cubic
  r^3 - 3u r + 2 rho^3 = 0 (u = rho^2 + 2a, a = C_threshold D/Q), r = 2 sqrt(u) cos(arccos(-rho^3/u^1.5)/3);
* cylinder: with y = (rho/R)^2, 1 - y + y ln y = s gives y = exp(1 + W_-1((s-1)/e)) (Lambert W, lower
  branch); a threshold radius solves x - ln x = 1 + 4a/rho^2 with x = (r/rho)^2, x = -W_-1(-exp(-b)),
  solved for x - 1 with log1p where 4a/rho^2 is small.

Each is polished by two Newton steps (round-off near the branch points), and tests compare them with a
scalar bracketing root finder.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Geometry = Literal["slab", "cylinder", "sphere"]
GEOMETRY_EXPONENT: dict[str, int] = {"slab": 0, "cylinder": 1, "sphere": 2}


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


def _core_fraction_cylinder(s: np.ndarray) -> np.ndarray:
    """y = (rho/R)^2 solving 1 - y + y ln y = s, 0 < s < 1 (s = (R_c/R)^2)."""
    from scipy.special import lambertw

    arg = np.clip((s - 1.0) / np.e, -1.0 / np.e, 0.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        w = lambertw(arg, -1).real
        y = np.where(np.isfinite(w), np.exp(1.0 + w), 0.0)
        for _ in range(2):  # Newton on h(y) = 1 - y + y ln y - s, h'(y) = ln y (skip where h' ~ 0)
            ln_y = np.log(np.where(y > 0, y, 1.0))
            step = np.where((y > 0) & (np.abs(ln_y) > 1e-6), (1.0 - y + y * ln_y - s) / ln_y, 0.0)
            y = np.clip(y - step, 0.0, 1.0)
    return y


def _threshold_excess_cylinder(delta: np.ndarray) -> np.ndarray:
    """t = x - 1 >= 0 solving t - log1p(t) = delta (i.e. x - ln x = 1 + delta, x = (r/rho)^2).

    Start from the lower Lambert-W branch, x = -W_-1(-exp(-1 - delta)), or, where delta is small (W loses
    precision next to its branch point) or large (exp underflows), from the series sqrt(2 delta) + 2 delta/3
    or the asymptote delta + ln(1 + delta); then Newton steps on t - log1p(t) - delta (derivative
    t / (1 + t)), which stay accurate for small t."""
    from scipy.special import lambertw

    delta = np.maximum(delta, 0.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        mid = (delta > 1e-2) & (delta < 600.0)
        w = lambertw(-np.exp(-1.0 - np.where(mid, delta, 1.0)), -1).real
        t = np.where(
            mid,
            -w - 1.0,
            np.where(delta <= 1e-2, np.sqrt(2.0 * delta) + 2.0 * delta / 3.0, delta + np.log1p(delta)),
        )
        t = np.where(np.isfinite(t) & (t >= 0), t, np.sqrt(2.0 * delta))
        for _ in range(3):
            fp = t / (1.0 + t)
            step = np.where(fp > 0, (t - np.log1p(t) - delta) / np.where(fp > 0, fp, 1.0), 0.0)
            t = np.maximum(t - step, 0.5 * t)
    return t


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
    s = (rc[core] / r_c) ** 2
    if m == 0:
        rho[core] = r_c - np.sqrt(2.0 * c_c / k_c)
    elif m == 1:
        rho[core] = r_c * np.sqrt(_core_fraction_cylinder(s))
    else:
        x = 0.5 + np.cos((np.arccos(np.clip(2.0 * s - 1.0, -1.0, 1.0)) - 2.0 * np.pi) / 3.0)
        for _ in range(2):  # Newton on (1-x)^2 (1+2x) - s, derivative 6x(x-1)
            d = 6.0 * x * (x - 1.0)
            x = np.where(np.abs(d) > 1e-9, x - ((1 - x) ** 2 * (1 + 2 * x) - s) / np.where(d == 0, 1.0, d), x)
        rho[core] = r_c * np.clip(x, 0.0, 1.0)
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
        a = ct_c / k_c
        if m == 0:
            res = rho_c + np.sqrt(2.0 * a)
        elif m == 1:
            res = rho_c * np.sqrt(1.0 + _threshold_excess_cylinder(4.0 * a / rho_c**2))
        else:
            u = rho_c**2 + 2.0 * a
            res = 2.0 * np.sqrt(u) * np.cos(np.arccos(np.clip(-(rho_c**3) / u**1.5, -1.0, 1.0)) / 3.0)
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
