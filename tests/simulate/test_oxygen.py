"""Numerical O2 solvers against closed forms: critical sizes, anoxic cores, grid convergence, kinetics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regenguide.simulate import closed_form as cf
from regenguide.simulate import oxygen as ox

D = 2.0e-5  # cm^2/s
ALPHA = 1.34e-9  # mol/(cm^3 mmHg)
C0 = ALPHA * 55.0
Q = 2.303e-10  # mol/(cm^3 s)

CLOSED = {
    "slab": math.sqrt(2 * D * C0 / Q),
    "cylinder": math.sqrt(4 * D * C0 / Q),
    "sphere": math.sqrt(6 * D * C0 / Q),
}


@pytest.mark.parametrize("geometry", ["slab", "cylinder", "sphere"])
def test_closed_form_critical_sizes(geometry: str) -> None:
    assert float(cf.critical_radius(geometry, D, C0, Q)) == pytest.approx(CLOSED[geometry], rel=1e-12)


@pytest.mark.parametrize("geometry", ["slab", "cylinder", "sphere"])
def test_numerical_critical_size_equals_closed_form(geometry: str) -> None:
    numerical = ox.numerical_critical_radius(geometry, diffusivity=D, c0=C0, consumption=Q, n=100)
    assert numerical == pytest.approx(CLOSED[geometry], rel=0.01)
    assert numerical == pytest.approx(CLOSED[geometry], rel=1e-6)  # the scheme is exact for quadratics


@pytest.mark.parametrize("geometry", ["slab", "cylinder", "sphere"])
def test_anoxic_core_of_larger_deposit_within_one_percent(geometry: str) -> None:
    radius = 2.5 * CLOSED[geometry]
    exact = float(cf.anoxic_core_radius(geometry, radius, D, C0, Q))
    assert exact > 0
    sol = ox.solve_radial(geometry, radius, diffusivity=D, c0=C0, consumption=Q, n=200)
    assert ox.anoxic_core_from_flux(sol, diffusivity=D, consumption=Q) == pytest.approx(exact, rel=0.01)
    assert ox.anoxic_core_from_solution(sol) == pytest.approx(exact, rel=0.01)
    # The whole profile agrees with the closed form.
    closed = cf.profile(geometry, sol.r_cm, radius, diffusivity=D, c0=C0, consumption=Q)
    assert np.max(np.abs(closed - sol.concentration)) < 1e-3 * C0


def test_closed_form_core_satisfies_boundary_conditions() -> None:
    for geometry in ("cylinder", "sphere"):
        radius = 3.0 * CLOSED[geometry]
        rho = float(cf.anoxic_core_radius(geometry, radius, D, C0, Q))
        r = np.array([rho, rho * (1 + 1e-6), radius])
        c = cf.profile(geometry, r, radius, diffusivity=D, c0=C0, consumption=Q)
        assert c[0] == pytest.approx(0.0, abs=1e-15)
        assert c[1] < 1e-9 * C0  # zero slope at the core edge: C ~ (r - rho)^2
        assert c[2] == pytest.approx(C0, rel=1e-9)
    slab_rho = float(cf.anoxic_core_radius("slab", 0.5, D, C0, Q))
    assert slab_rho == pytest.approx(0.5 - math.sqrt(2 * D * C0 / Q), rel=1e-12)


def test_grid_convergence_second_order() -> None:
    radius = 2.5 * CLOSED["sphere"]
    exact = float(cf.anoxic_core_radius("sphere", radius, D, C0, Q))
    errors = []
    for n in (25, 50, 100, 200):
        sol = ox.solve_radial("sphere", radius, diffusivity=D, c0=C0, consumption=Q, n=n)
        errors.append(abs(ox.anoxic_core_from_flux(sol, diffusivity=D, consumption=Q) - exact) / exact)
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert min(orders) > 1.5
    assert errors[-1] < 1e-4


def test_profile_error_shrinks_with_refinement_cylinder() -> None:
    radius = 2.0 * CLOSED["cylinder"]
    errs = []
    for n in (20, 80):
        sol = ox.solve_radial("cylinder", radius, diffusivity=D, c0=C0, consumption=Q, n=n)
        closed = cf.profile("cylinder", sol.r_cm, radius, diffusivity=D, c0=C0, consumption=Q)
        errs.append(np.max(np.abs(closed - sol.concentration)))
    assert errs[1] < errs[0] / 4


def test_michaelis_menten_above_zero_order_and_converges_to_it() -> None:
    radius = 2.0 * CLOSED["cylinder"]
    zero = ox.solve_radial("cylinder", radius, diffusivity=D, c0=C0, consumption=Q, n=200)
    mm = ox.solve_radial(
        "cylinder", radius, diffusivity=D, c0=C0, consumption=Q, kinetics="mm", km=8e-9, n=200
    )
    # Uptake Vmax C/(Km+C) <= Q everywhere, so O2 is higher everywhere (comparison principle).
    assert np.all(mm.concentration >= zero.concentration - 1e-15)
    assert mm.concentration[0] > 0
    sharp = ox.solve_radial(
        "cylinder", radius, diffusivity=D, c0=C0, consumption=Q, kinetics="mm", km=1e-5 * C0, n=200
    )
    assert np.max(np.abs(sharp.concentration - zero.concentration)) < 0.01 * C0
    # Residual of the MM equation at the solution is tiny.
    grid = ox.RadialGrid.build("cylinder", radius, 200)
    matrix, b = grid.operator(D, C0)
    c = mm.concentration[:-1]
    residual = matrix @ c + grid.volume * Q * c / (8e-9 + c) - b
    assert np.max(np.abs(residual)) < 1e-9 * np.max(np.abs(b))


def test_mm_critical_size_larger_than_zero_order() -> None:
    zero = CLOSED["sphere"]
    mm = ox.numerical_critical_radius(
        "sphere", diffusivity=D, c0=C0, consumption=Q, kinetics="mm", km=8e-9, c_threshold=0.1 * ALPHA, n=100
    )
    assert mm > zero
    with pytest.raises(ValueError):
        ox.numerical_critical_radius("sphere", diffusivity=D, c0=C0, consumption=Q, kinetics="mm", km=8e-9)


def test_zone_fractions_numerical_match_closed_form() -> None:
    radius = 0.3
    ca, cn = 29.7 * ALPHA, 0.1 * ALPHA
    sol = ox.solve_radial("cylinder", radius, diffusivity=D, c0=C0, consumption=Q, n=800)
    num = ox.zone_volume_fractions(sol, ca, cn)
    radii = cf.zone_radii(
        "cylinder", radius, diffusivity=D, c0=C0, consumption=Q, c_adipocyte=ca, c_necrosis=cn
    )
    closed = cf.zone_fractions("cylinder", radii)
    for zone in ("survival", "regenerating", "necrotic"):
        assert num[zone] == pytest.approx(float(closed[zone]), abs=0.005)


def test_first_days_reach_steady_zones_and_revascularisation_helps() -> None:
    radius = 0.25
    ca, cn = 29.7 * ALPHA, 0.1 * ALPHA
    kwargs = {
        "diffusivity": D,
        "c0": C0,
        "consumption": Q,
        "c_adipocyte": ca,
        "c_necrosis": cn,
        "adipocyte_tolerance_h": 24.0,
        "asc_tolerance_h": 72.0,
        "hours": 96.0,
        "dt_h": 1.0,
        "n": 100,
    }
    still = ox.simulate_days("cylinder", radius, **kwargs)  # type: ignore[arg-type]
    radii = cf.zone_radii(
        "cylinder", radius, diffusivity=D, c0=C0, consumption=Q, c_adipocyte=ca, c_necrosis=cn
    )
    steady = cf.zone_fractions("cylinder", radii)
    for zone in ("survival", "regenerating", "necrotic"):
        assert still.zone_fractions[zone] == pytest.approx(float(steady[zone]), abs=0.03)
    # Before 72 h no ASC has died: no necrosis yet on day 2.
    early = ox.simulate_days("cylinder", radius, **{**kwargs, "hours": 48.0})  # type: ignore[arg-type]
    assert early.zone_fractions["necrotic"] == 0.0
    assert early.zone_fractions["regenerating"] > 0.3
    fast = ox.simulate_days("cylinder", radius, revascularization_cm_per_h=0.02 / 24, **kwargs)  # type: ignore[arg-type]
    assert fast.zone_fractions["necrotic"] < still.zone_fractions["necrotic"]


def test_cross_section_single_strand_matches_radial_model() -> None:
    radius = 0.12
    # A very short perfusion length holds the bed at C_bed right up to the strand: the 1-D Dirichlet problem.
    section = ox.solve_cross_section(
        np.array([[0.2, 0.2]]),
        np.array([radius]),
        width_cm=0.4,
        thickness_cm=0.4,
        diffusivity=D,
        c_bed=C0,
        consumption=Q,
        perfusion_length_cm=1e-4,
        h_cm=0.005,
    )
    ca, cn = 29.7 * ALPHA, 0.1 * ALPHA
    fr = section.strand_zone_fractions(ca, cn)[0]
    radii = cf.zone_radii(
        "cylinder", radius, diffusivity=D, c0=C0, consumption=Q, c_adipocyte=ca, c_necrosis=cn
    )
    closed = cf.zone_fractions("cylinder", radii)
    for zone in ("survival", "regenerating", "necrotic"):
        assert fr[zone] == pytest.approx(float(closed[zone]), abs=0.04)


def test_cross_section_crowding_lowers_survival() -> None:
    radius, thickness = 0.1, 0.5
    ca, cn = 29.7 * ALPHA, 0.1 * ALPHA
    out = []
    for spacing in (0.21, 0.8):
        centers = ox.row_layout(3, 2 * radius, spacing, thickness)
        section = ox.solve_cross_section(
            centers,
            np.full(3, radius),
            width_cm=3 * spacing,
            thickness_cm=thickness,
            diffusivity=D,
            c_bed=C0,
            consumption=Q,
            perfusion_length_cm=0.025,
            h_cm=0.01,
        )
        out.append(np.mean([f["survival"] for f in section.strand_zone_fractions(ca, cn)]))
        assert section.concentration.min() >= 0
    assert out[0] < out[1]


def test_mm_cross_section_runs_and_is_positive() -> None:
    section = ox.solve_cross_section(
        np.array([[0.25, 0.25]]),
        np.array([0.2]),
        width_cm=0.5,
        thickness_cm=0.5,
        diffusivity=D,
        c_bed=C0,
        consumption=Q,
        perfusion_length_cm=0.025,
        kinetics="mm",
        km=8e-9,
        h_cm=0.01,
    )
    assert section.concentration.min() > 0
    assert section.concentration.max() <= C0 * (1 + 1e-9)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        ox.solve_radial("cube", 0.1, diffusivity=D, c0=C0, consumption=Q)
    with pytest.raises(ValueError):
        ox.solve_radial("slab", -0.1, diffusivity=D, c0=C0, consumption=Q)
    with pytest.raises(ValueError):
        ox.solve_radial("slab", 0.1, diffusivity=D, c0=C0, consumption=Q, kinetics="mm")


@pytest.mark.parametrize("geometry", ["cylinder", "sphere"])
def test_explicit_roots_match_a_bracketing_root_finder(geometry: str) -> None:
    """The Lambert-W / trigonometric-cubic roots equal scalar Brent roots of the defining equations."""
    from scipy.optimize import brentq

    m = cf.exponent(geometry)
    k = Q / D
    rc = CLOSED[geometry]
    for factor in (1.0 + 1e-9, 1.001, 1.1, 2.0, 10.0, 100.0):
        radius = factor * rc
        rho = float(cf.anoxic_core_radius(geometry, radius, D, C0, Q))
        ref = brentq(lambda x, radius=radius: k * float(cf._g(m, np.array(radius), np.array(x))) - C0, 1e-300, radius,
                     xtol=1e-15 * radius, rtol=1e-14)
        assert rho == pytest.approx(ref, rel=1e-8, abs=1e-9 * radius)  # ill-conditioned near critical
        for pct in (1e-6, 0.1, 0.5, 0.9):
            ct = pct * C0
            got = float(cf.threshold_radius(geometry, np.array([radius]), np.array([rho]), np.array([k]),
                                            np.array([C0]), np.array([ct]))[0])
            if rho > 0:
                def front(r: float, rho: float = rho, ct: float = ct) -> float:
                    return k * float(cf._g(m, np.array(r), np.array(rho))) - ct

                want = brentq(front, rho, radius, xtol=1e-15 * radius, rtol=1e-14)
                assert got == pytest.approx(want, rel=1e-8)
                assert k * float(cf._g(m, np.array(got), np.array(rho))) == pytest.approx(ct, rel=1e-6)


def test_grid_convergence_cylinder_anoxic_core() -> None:
    radius = 2.5 * CLOSED["cylinder"]
    exact = float(cf.anoxic_core_radius("cylinder", radius, D, C0, Q))
    errors = []
    for n in (25, 50, 100, 200):
        sol = ox.solve_radial("cylinder", radius, diffusivity=D, c0=C0, consumption=Q, n=n)
        errors.append(abs(ox.anoxic_core_from_flux(sol, diffusivity=D, consumption=Q) - exact) / exact)
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    assert min(math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)) > 1.5
    assert errors[1] < 0.01  # within 1% already at 50 cells
