"""Numerical O2 reaction-diffusion in graft deposits: 1-D radial (slab, cylinder, sphere), a 2-D cross-section
of strands in a perfused recipient bed, and the first days in time.

Discretisation: finite volumes on sparse matrices (SciPy), vectorised assembly, no Python loops over cells.

* Zero-order consumption Q that stops where O2 runs out is an obstacle problem (linear complementarity:
  c >= 0, M c - f >= 0, c (M c - f) = 0 with M an M-matrix); it is solved exactly by a primal-dual active-set
  iteration (Hintermueller, Ito & Kunisch 2002), which converges in finitely many steps for M-matrices.
* Michaelis-Menten consumption Vmax C / (Km + C) is solved by Newton's method.
* Time stepping is implicit Euler with Newton iterations at each step.

Units: cm, s, mol/cm^3 (concentration), mmHg only at the interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from regenguide.simulate.closed_form import exponent

Kinetics = Literal["zero", "mm"]


class SolverError(RuntimeError):
    """The nonlinear iteration did not converge (reported, never silently ignored)."""


# ----------------------------------------------------------------------------------------------------
# Generic nonlinear solvers on an assembled system  M c = f - V * R(c)
# ----------------------------------------------------------------------------------------------------


def _solve_obstacle(
    matrix: sp.csr_matrix, base: np.ndarray, uptake: np.ndarray, constrained: np.ndarray, max_iter: int = 200
) -> tuple[np.ndarray, int]:
    """Zero-order uptake that stops at C = 0: with rhs = base - uptake, solve the LCP  c >= 0, M c - rhs >= 0,
    c (M c - rhs) = 0 on `constrained` cells (elsewhere M c = rhs) by the primal-dual active-set method.
    Returns (c, iterations of the active-set loop)."""
    n = base.shape[0]
    matrix = sp.csr_matrix(matrix)
    # Starting from the unconstrained solution the active set would shrink by about one cell per iteration;
    # a smoothed problem (uptake q C / (C + eps), continuation in eps, Newton) gives a start close to the
    # answer, so the active-set loop then needs only a few exact solves.
    rhs = base - uptake
    c_scale = float(np.max(np.abs(spsolve(matrix.tocsc(), base)))) or 1.0
    c = np.full(n, c_scale)
    eps = c_scale
    for _ in range(4):
        eps *= 0.1
        c, _its = _solve_newton_mm(matrix, base, uptake, eps, c, tol=1e-6 * c_scale)
    active = constrained & (c < eps)
    for iteration in range(1, max_iter + 1):
        free = ~active
        c = np.zeros(n)
        if free.any():
            sub = matrix[free][:, free].tocsc()
            c[free] = spsolve(sub, rhs[free]) if sub.shape[0] > 1 else rhs[free] / sub.toarray()[0, 0]
        lam = matrix @ c - rhs
        # Tolerances stop cycling on degenerate cells (c = 0 and lambda = 0 to round-off, e.g.
        # exactly critical).
        lam_tol = 1e-10 * (float(np.max(np.abs(uptake))) or 1.0)
        new_active = constrained & ((active & (lam > -lam_tol)) | (free & (c < -1e-10 * c_scale)))
        if np.array_equal(new_active, active):
            return np.maximum(c, 0.0), iteration
        active = new_active
    raise SolverError("active-set iteration did not converge")


def _solve_newton_mm(
    matrix: sp.csr_matrix,
    rhs: np.ndarray,
    volume_vmax: np.ndarray,
    km: float,
    c_start: np.ndarray,
    tol: float,
    max_iter: int = 100,
) -> tuple[np.ndarray, int]:
    """Solve M c + (V Vmax) c / (Km + c) = rhs by damped Newton, keeping c >= 0."""
    c = c_start.copy()
    for iteration in range(1, max_iter + 1):
        uptake = volume_vmax * c / (km + c)
        residual = matrix @ c + uptake - rhs
        jac = matrix + sp.diags(volume_vmax * km / (km + c) ** 2)
        step = spsolve(jac.tocsc(), -residual)
        c_new = c + step
        # Keep the iterate non-negative (the solution is): halve the step where it would cross zero.
        c_new = np.where(c_new < 0, 0.5 * c, c_new)
        if np.max(np.abs(c_new - c)) < tol:
            return c_new, iteration
        c = c_new
    raise SolverError("Newton iteration for Michaelis-Menten kinetics did not converge")


# ----------------------------------------------------------------------------------------------------
# 1-D radial
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RadialGrid:
    """Vertex-centred finite volumes on [0, R]: nodes r_i = i h, node n on the boundary (Dirichlet)."""

    geometry: str
    radius_cm: float
    n: int
    r: np.ndarray = field(repr=False)
    volume: np.ndarray = field(
        repr=False
    )  # control volumes of nodes 0..n-1 (per unit area/length/solid angle)
    face_area: np.ndarray = field(repr=False)  # faces i+1/2, i = 0..n-1

    @classmethod
    def build(cls, geometry: str, radius_cm: float, n: int) -> RadialGrid:
        if radius_cm <= 0:
            raise ValueError("radius must be positive")
        if n < 4:
            raise ValueError("need at least 4 cells")
        m = exponent(geometry)
        h = radius_cm / n
        r = np.arange(n + 1) * h
        left = np.maximum(r[:-1] - 0.5 * h, 0.0)
        right = r[:-1] + 0.5 * h
        volume = (right ** (m + 1) - left ** (m + 1)) / (m + 1)
        face_area = ((np.arange(n) + 0.5) * h) ** m
        return cls(geometry, radius_cm, n, r, volume, face_area)

    @property
    def h(self) -> float:
        return self.radius_cm / self.n

    def operator(self, diffusivity: float, c_boundary: float) -> tuple[sp.csr_matrix, np.ndarray]:
        """(M, b): M = minus the discrete diffusion operator on nodes 0..n-1, b its boundary contribution, so
        that steady state with uptake U (mol per control volume per s) reads M c = b - U."""
        coef = diffusivity * self.face_area / self.h  # conductance of face i+1/2
        main = coef.copy()
        main[1:] += coef[:-1]
        off = -coef[:-1]
        matrix = sp.diags([off, main, off], [-1, 0, 1], format="csr")
        b = np.zeros(self.n)
        b[-1] = coef[-1] * c_boundary
        return matrix, b


@dataclass(frozen=True)
class RadialSolution:
    geometry: str
    radius_cm: float
    r_cm: np.ndarray
    concentration: np.ndarray  # mol/cm^3 at the nodes, boundary included
    iterations: int
    kinetics: str

    def po2_mmhg(self, solubility: float) -> np.ndarray:
        return self.concentration / solubility


def solve_radial(
    geometry: str,
    radius_cm: float,
    *,
    diffusivity: float,
    c0: float,
    consumption: float,
    kinetics: Kinetics = "zero",
    km: float | None = None,
    n: int = 400,
) -> RadialSolution:
    """Steady O2 profile in a slab (half-thickness), cylinder or sphere of radius `radius_cm`."""
    grid = RadialGrid.build(geometry, radius_cm, n)
    matrix, b = grid.operator(diffusivity, c0)
    if kinetics == "zero":
        c, its = _solve_obstacle(matrix, b, grid.volume * consumption, np.ones(n, dtype=bool))
    elif kinetics == "mm":
        if km is None or km <= 0:
            raise ValueError("Michaelis-Menten kinetics need km > 0")
        c, its = _solve_newton_mm(matrix, b, grid.volume * consumption, km, np.full(n, c0), tol=1e-12 * c0)
    else:
        raise ValueError(f"unknown kinetics {kinetics!r}; use zero or mm")
    return RadialSolution(geometry, radius_cm, grid.r, np.append(c, c0), its, kinetics)


def numerical_critical_radius(
    geometry: str,
    *,
    diffusivity: float,
    c0: float,
    consumption: float,
    kinetics: Kinetics = "zero",
    km: float | None = None,
    c_threshold: float = 0.0,
    n: int = 400,
) -> float:
    """Largest radius whose centre stays at or above `c_threshold` (anoxia for zero-order when 0), found by
    bisection on numerical solutions. For Michaelis-Menten kinetics give c_threshold > 0 (the centre never
    reaches exactly 0)."""
    if kinetics == "mm" and c_threshold <= 0:
        raise ValueError("with Michaelis-Menten kinetics the centre never reaches 0; give c_threshold > 0")

    def centre(radius: float) -> float:
        sol = solve_radial(
            geometry,
            radius,
            diffusivity=diffusivity,
            c0=c0,
            consumption=consumption,
            kinetics=kinetics,
            km=km,
            n=n,
        )
        return float(sol.concentration[0])

    m = exponent(geometry)
    guess = float(np.sqrt(2.0 * (m + 1) * diffusivity * c0 / consumption))
    lo, hi = 0.25 * guess, guess
    while centre(hi) > c_threshold:
        lo, hi = hi, 2.0 * hi
        if hi > 1e3 * guess:
            raise SolverError("no critical size found")
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if centre(mid) > c_threshold:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def anoxic_core_from_solution(sol: RadialSolution, c_threshold: float = 0.0) -> float:
    """Radius (cm) of the region where C <= c_threshold, located by linear interpolation between nodes."""
    c = sol.concentration
    r = sol.r_cm
    below = c <= c_threshold
    if not below[0]:
        return 0.0
    i = int(np.argmin(below))  # first node above the threshold
    if i == 0:
        return float(sol.radius_cm)
    if c_threshold <= 0.0 and i + 1 < len(c):
        # At an anoxic front C ~ a (r - rho)^2 (C and dC/dr vanish), so sqrt(C) is linear in r: extrapolate it
        # from the first two oxygenated nodes (second-order accurate, unlike the last anoxic node).
        s1, s2 = np.sqrt(c[i]), np.sqrt(c[i + 1])
        if s2 > s1:
            return float(np.clip(r[i] - s1 * (r[i + 1] - r[i]) / (s2 - s1), r[i - 1], r[i]))
    c_lo, c_hi = c[i - 1], c[i]
    t = (c_threshold - c_lo) / (c_hi - c_lo) if c_hi > c_lo else 0.0
    return float(r[i - 1] + t * (r[i] - r[i - 1]))


def anoxic_core_from_flux(sol: RadialSolution, *, diffusivity: float, consumption: float) -> float:
    """Anoxic-core radius (cm) from O2 conservation: the boundary flux equals Q times the oxygenated volume,
    so (R^(m+1) - rho^(m+1)) / (m+1) = flux / Q. Uses the discrete boundary flux, which accounts for the
    partly consuming cell at the front; more accurate than locating the front between nodes."""
    m = exponent(sol.geometry)
    grid = RadialGrid.build(sol.geometry, sol.radius_cm, len(sol.r_cm) - 1)
    c = sol.concentration
    radius = sol.radius_cm
    # Flux through the last face plus the uptake of the half cell between that face and the boundary.
    half_cell = (radius ** (m + 1) - (radius - 0.5 * grid.h) ** (m + 1)) / (m + 1)
    flux = diffusivity * grid.face_area[-1] * (c[-1] - c[-2]) / grid.h + consumption * half_cell
    inner = radius ** (m + 1) - (m + 1) * flux / consumption
    return float(max(inner, 0.0) ** (1.0 / (m + 1)))


def zone_volume_fractions(sol: RadialSolution, c_adipocyte: float, c_necrosis: float) -> dict[str, float]:
    """Volume fractions of survival (C >= c_adipocyte), regenerating and necrotic (C < c_necrosis) zones,
    using each node's control volume."""
    grid = RadialGrid.build(sol.geometry, sol.radius_cm, len(sol.r_cm) - 1)
    c = sol.concentration[:-1]
    vol = grid.volume
    total = vol.sum()
    surv = vol[c >= c_adipocyte].sum() / total
    nec = vol[c < c_necrosis].sum() / total
    return {"survival": float(surv), "regenerating": float(1.0 - surv - nec), "necrotic": float(nec)}


# ----------------------------------------------------------------------------------------------------
# First days in time
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransientResult:
    geometry: str
    radius_cm: float
    r_cm: np.ndarray
    times_h: np.ndarray
    concentration: np.ndarray  # (len(times_h), n+1) snapshots
    adipocytes_alive: np.ndarray  # bool per node (boundary included) at the end
    ascs_alive: np.ndarray
    zone_fractions: dict[str, float]


def simulate_days(
    geometry: str,
    radius_cm: float,
    *,
    diffusivity: float,
    c0: float,
    consumption: float,
    c_adipocyte: float,
    c_necrosis: float,
    adipocyte_tolerance_h: float,
    asc_tolerance_h: float,
    kinetics: Kinetics = "zero",
    km: float | None = None,
    revascularization_cm_per_h: float = 0.0,
    hours: float = 96.0,
    dt_h: float = 0.5,
    n: int = 200,
    c_initial: float | None = None,
) -> TransientResult:
    """O2 and cell fate over the first days after grafting.

    Cells accumulate time spent below their threshold; adipocytes die after `adipocyte_tolerance_h` below
    c_adipocyte (Eto 2012: from day 1), ASCs after `asc_tolerance_h` below c_necrosis (3 days). Tissue stops
    consuming O2 only when both are dead (a modelling choice: the ASC share of consumption is unknown). A
    revascularisation front advancing inward at `revascularization_cm_per_h` clamps the tissue it reaches to
    the boundary concentration. Zero-order kinetics are regularised as Q C / (C + 1e-3 C0) in time (a sharp
    switch solved by Newton's method at each implicit step); the graft starts at `c_initial` (default: anoxic
    harvest, 0).
    """
    grid = RadialGrid.build(geometry, radius_cm, n)
    matrix, b = grid.operator(diffusivity, c0)
    if kinetics == "mm":
        if km is None or km <= 0:
            raise ValueError("Michaelis-Menten kinetics need km > 0")
        k_sat = km
    elif kinetics == "zero":
        k_sat = 1e-3 * c0
    else:
        raise ValueError(f"unknown kinetics {kinetics!r}")
    dt = dt_h * 3600.0
    steps = int(round(hours / dt_h))
    c = np.full(n, 0.0 if c_initial is None else c_initial)
    hyp_adipo = np.zeros(n)
    hyp_asc = np.zeros(n)
    adipo_alive = np.ones(n, dtype=bool)
    asc_alive = np.ones(n, dtype=bool)
    mass = sp.diags(grid.volume / dt)
    snapshots = [np.append(c, c0)]
    times = [0.0]
    system = (mass + matrix).tocsr()
    for step in range(1, steps + 1):
        t_h = step * dt_h
        consuming = (adipo_alive | asc_alive).astype(float)
        perfused = grid.r[:-1] >= radius_cm - revascularization_cm_per_h * t_h
        free = (~perfused).astype(float)
        # Tissue reached by the revascularisation front becomes a Dirichlet row (c = C0), by diagonal masking.
        a = (sp.diags(free) @ system + sp.diags(1.0 - free)).tocsr()
        rhs = free * (grid.volume / dt * c + b) + (1.0 - free) * c0
        c, _its = _solve_newton_mm(
            a, rhs, free * grid.volume * consumption * consuming, k_sat, c, tol=1e-9 * c0
        )
        hyp_adipo += np.where((c < c_adipocyte) & ~perfused, dt_h, 0.0)
        hyp_asc += np.where((c < c_necrosis) & ~perfused, dt_h, 0.0)
        adipo_alive &= hyp_adipo < adipocyte_tolerance_h
        asc_alive &= hyp_asc < asc_tolerance_h
        if step % max(1, int(round(1.0 / dt_h))) == 0:
            snapshots.append(np.append(c, c0))
            times.append(t_h)
    vol = grid.volume
    total = vol.sum()
    surv = vol[adipo_alive].sum() / total
    regen = vol[~adipo_alive & asc_alive].sum() / total
    fractions = {"survival": float(surv), "regenerating": float(regen), "necrotic": float(1.0 - surv - regen)}
    return TransientResult(
        geometry,
        radius_cm,
        grid.r,
        np.array(times),
        np.vstack(snapshots),
        np.append(adipo_alive, True),
        np.append(asc_alive, True),
        fractions,
    )


# ----------------------------------------------------------------------------------------------------
# 2-D cross-section: strands in a perfused recipient bed
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrossSection:
    """Result of the 2-D model: cell-centred grid of spacing h over width x thickness."""

    h_cm: float
    width_cm: float
    thickness_cm: float
    centers_cm: np.ndarray  # (k, 2) strand centres (x, y)
    radii_cm: np.ndarray  # (k,)
    label: np.ndarray  # (ny, nx) strand index, -1 for recipient bed
    concentration: np.ndarray  # (ny, nx) mol/cm^3
    iterations: int
    kinetics: str

    def strand_zone_fractions(self, c_adipocyte: float, c_necrosis: float) -> list[dict[str, float]]:
        """Area fractions of the three zones for each strand (vectorised with bincount)."""
        k = len(self.radii_cm)
        lab = self.label.ravel()
        c = self.concentration.ravel()
        mask = lab >= 0
        total = np.bincount(lab[mask], minlength=k).astype(float)
        surv = np.bincount(lab[mask], weights=(c[mask] >= c_adipocyte).astype(float), minlength=k)
        nec = np.bincount(lab[mask], weights=(c[mask] < c_necrosis).astype(float), minlength=k)
        total = np.where(total > 0, total, 1.0)
        return [
            {"survival": float(s / t), "regenerating": float((t - s - x) / t), "necrotic": float(x / t)}
            for s, x, t in zip(surv, nec, total, strict=True)
        ]


def row_layout(n_strands: int, diameter_cm: float, spacing_cm: float, thickness_cm: float) -> np.ndarray:
    """Centres of `n_strands` strands in one row at mid-depth, `spacing_cm` apart (x from half a spacing)."""
    x = (np.arange(n_strands) + 0.5) * spacing_cm
    return np.column_stack([x, np.full(n_strands, 0.5 * thickness_cm)])


def solve_cross_section(
    centers_cm: np.ndarray,
    radii_cm: np.ndarray,
    *,
    width_cm: float,
    thickness_cm: float,
    diffusivity: float,
    c_bed: float,
    consumption: float,
    perfusion_length_cm: float,
    kinetics: Kinetics = "zero",
    km: float | None = None,
    h_cm: float | None = None,
) -> CrossSection:
    """Steady O2 in a cross-section of strands (circles) embedded in a recipient bed of given thickness.

    The bed is perfused tissue: a linear supply k (C_bed - C) with k = D / perfusion_length^2 (a Krogh-type
    lumped capillary source). Top and bottom faces (dermis and deep fascia) are held at C_bed; the sides are
    symmetry planes (zero flux), so one strand in a cell of width = spacing models an infinite fan.
    """
    centers_cm = np.atleast_2d(np.asarray(centers_cm, dtype=float))
    radii_cm = np.asarray(radii_cm, dtype=float).reshape(-1)
    if h_cm is None:
        h_cm = min(float(radii_cm.min()) / 8.0, thickness_cm / 20.0)
    nx = max(4, int(round(width_cm / h_cm)))
    ny = max(4, int(round(thickness_cm / h_cm)))
    hx, hy = width_cm / nx, thickness_cm / ny
    x = (np.arange(nx) + 0.5) * hx
    y = (np.arange(ny) + 0.5) * hy
    xx, yy = np.meshgrid(x, y)
    # Label each cell with the strand it belongs to (nearest centre within its radius), vectorised over
    # strands.
    d2 = (xx[None] - centers_cm[:, 0, None, None]) ** 2 + (yy[None] - centers_cm[:, 1, None, None]) ** 2
    inside = d2 <= radii_cm[:, None, None] ** 2
    label = np.where(inside.any(axis=0), np.argmin(np.where(inside, d2, np.inf), axis=0), -1)

    def lap1d(n: int, dirichlet: bool) -> sp.csr_matrix:
        main = np.full(n, 2.0)
        if dirichlet:
            main[[0, -1]] = 3.0  # boundary face at half a cell: conductance 2/h^2
        else:
            main[[0, -1]] = 1.0
        off = -np.ones(n - 1)
        return sp.diags([off, main, off], [-1, 0, 1], format="csr")

    ix, iy = sp.identity(nx, format="csr"), sp.identity(ny, format="csr")
    matrix = diffusivity * (sp.kron(iy, lap1d(nx, False)) / hx**2 + sp.kron(lap1d(ny, True), ix) / hy**2)
    bnd = np.zeros((ny, nx))
    bnd[[0, -1], :] = 2.0 * diffusivity * c_bed / hy**2
    graft = (label >= 0).ravel()
    k_supply = diffusivity / perfusion_length_cm**2
    bed = ~graft
    matrix = (matrix + sp.diags(np.where(bed, k_supply, 0.0))).tocsr()
    rhs = bnd.ravel() + np.where(bed, k_supply * c_bed, 0.0)
    if kinetics == "zero":
        c, its = _solve_obstacle(matrix, rhs, np.where(graft, consumption, 0.0), graft)
    elif kinetics == "mm":
        if km is None or km <= 0:
            raise ValueError("Michaelis-Menten kinetics need km > 0")
        c, its = _solve_newton_mm(
            matrix, rhs, np.where(graft, consumption, 0.0), km, np.full(nx * ny, c_bed), tol=1e-12 * c_bed
        )
    else:
        raise ValueError(f"unknown kinetics {kinetics!r}")
    return CrossSection(
        h_cm=hx,
        width_cm=width_cm,
        thickness_cm=thickness_cm,
        centers_cm=centers_cm,
        radii_cm=radii_cm,
        label=label,
        concentration=c.reshape(ny, nx),
        iterations=its,
        kinetics=kinetics,
    )
