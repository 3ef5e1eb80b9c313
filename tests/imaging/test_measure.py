from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regenguide.imaging.dicom_io import Calibration, CalibrationMissing, ImagingError
from regenguide.imaging.measure import (
    ScanLine,
    area_observation,
    distance_mm,
    distance_observation,
    ellipsoid_volume_ml,
    ellipsoid_volume_observation,
    measure_thickness,
    polygon_area_mm2,
    slices_volume_observation,
    volume_from_slices_ml,
)
from regenguide.imaging.phantom import PhantomSpec, VesselSpec, make_phantom
from regenguide.imaging.refs import ImageReference

CAL = Calibration(mm_per_px_x=0.1, mm_per_px_y=0.2, source="user")


def test_distance_is_calibrated_per_axis() -> None:
    assert distance_mm((0, 0), (30, 0), CAL) == pytest.approx(3.0)
    assert distance_mm((0, 0), (0, 30), CAL) == pytest.approx(6.0)
    assert distance_mm((0, 0), (30, 20), CAL) == pytest.approx(5.0)  # 3-4-5
    obs = distance_observation((0, 0), (30, 20), CAL, ImageReference(sop_instance_uid="1.2.3"))
    assert (obs.code, obs.unit, obs.value) == ("distance", "mm", pytest.approx(5.0))
    assert obs.image is not None and obs.image.sop_instance_uid == "1.2.3"


def test_no_calibration_is_a_specific_error() -> None:
    with pytest.raises(CalibrationMissing, match="needs a physical calibration"):
        distance_mm((0, 0), (1, 1), None)
    with pytest.raises(CalibrationMissing):
        polygon_area_mm2([(0, 0), (1, 0), (0, 1)], None)


def test_polygon_area_closed_forms() -> None:
    square = [(0, 0), (100, 0), (100, 50), (0, 50)]  # 10 mm x 10 mm
    assert polygon_area_mm2(square, CAL) == pytest.approx(100.0)
    assert polygon_area_mm2(square[::-1], CAL) == pytest.approx(100.0)  # orientation-free
    iso = Calibration(mm_per_px_x=0.05, mm_per_px_y=0.05, source="user")
    n = 720
    circle = [
        (200 + 100 * math.cos(t), 200 + 100 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, n, False)
    ]
    # Inscribed regular n-gon: (n/2) r^2 sin(2 pi / n), r = 5 mm.
    assert polygon_area_mm2(circle, iso) == pytest.approx(n / 2 * 25 * math.sin(2 * math.pi / n), rel=1e-9)
    assert area_observation(square, CAL).unit == "mm2"


def test_polygon_errors() -> None:
    with pytest.raises(ImagingError, match="at least 3 points"):
        polygon_area_mm2([(0, 0), (1, 1)], CAL)
    with pytest.raises(ImagingError, match="crosses itself"):
        polygon_area_mm2([(0, 0), (10, 10), (10, 0), (0, 10)], CAL)  # bow tie


def test_cavalieri_sphere_and_ellipsoid() -> None:
    r, d = 10.0, 1.0  # mm
    centres = np.arange(-r + d / 2, r, d)
    areas = [math.pi * (r * r - z * z) for z in centres]
    exact = 4 / 3 * math.pi * r**3 / 1000  # mL
    # Midpoint rule on a quadratic integrand: error = pi * d^2 * 2r / 12 exactly.
    assert volume_from_slices_ml(areas, d) == pytest.approx(exact + math.pi * d * d * 2 * r / 12 / 1000)
    assert ellipsoid_volume_ml(20, 20, 20) == pytest.approx(exact)
    assert ellipsoid_volume_ml(30, 20, 10) == pytest.approx(math.pi * 6000 / 6 / 1000)
    obs = ellipsoid_volume_observation(30, 20, 10)
    assert (obs.code, obs.unit) == ("deposit-volume", "mL")
    with pytest.raises(ImagingError):
        volume_from_slices_ml([], 1.0)
    with pytest.raises(ImagingError):
        ellipsoid_volume_ml(0, 1, 1)


def test_slices_volume_observation_from_traced_squares() -> None:
    square = [(0, 0), (100, 0), (100, 50), (0, 50)]  # 100 mm2 each
    obs = slices_volume_observation([square, square, square], 2.0, CAL)
    assert obs.value == pytest.approx(0.6)  # 3 x 100 mm2 x 2 mm = 600 mm3
    assert obs.geometry["slices"] == 3


@pytest.mark.parametrize("seed", [0, 3, 8])
def test_thickness_on_phantom(seed: int) -> None:
    spec = PhantomSpec(vessels=[VesselSpec(x_mm=25.0, depth_mm=9.0, diameter_mm=1.0)])
    ph = make_phantom(seed, spec)
    cal = Calibration(mm_per_px_x=spec.mm_per_px, mm_per_px_y=spec.mm_per_px, source="user")
    line = ScanLine(start=(150, 40), end=(150, 440))
    result = measure_thickness(ph.frames[0], line, cal)
    values = {o.code: o.value for o in result.observations}
    tops = ph.truth.layer_tops_mm
    assert values["dermal-thickness"] == pytest.approx(tops["subcutis"], abs=0.25)
    assert values["subcutaneous-thickness"] == pytest.approx(tops["fascia"] - tops["subcutis"], abs=0.25)
    assert result.boundaries.source == {"skin": "auto", "dermis_bottom": "auto", "fascia": "auto"}
    skin_px = result.boundaries_px["skin"][1]
    assert skin_px == pytest.approx(ph.truth.skin_line_px, abs=4)


def test_thickness_boundaries_are_editable() -> None:
    ph = make_phantom(2)
    cal = Calibration(mm_per_px_x=0.05, mm_per_px_y=0.05, source="user")
    line = ScanLine(start=(100, 40), end=(100, 440))
    result = measure_thickness(ph.frames[0], line, cal, overrides={"skin": 12.0, "dermis_bottom": 47.0})
    dermal = next(o for o in result.observations if o.code == "dermal-thickness")
    assert dermal.value == pytest.approx(35 * 0.05)
    assert dermal.edited and "edited" in dermal.method
    assert result.boundaries.source["skin"] == "user"
    with pytest.raises(ImagingError, match="unknown boundary"):
        measure_thickness(ph.frames[0], line, cal, overrides={"epidermis": 3.0})
    with pytest.raises(ImagingError, match="outside the line"):
        measure_thickness(ph.frames[0], line, cal, overrides={"fascia": 999.0})


def test_oblique_line_uses_anisotropic_calibration() -> None:
    img = np.zeros((200, 200, 3), np.uint8)
    img[50:, :] = 200
    line = ScanLine(start=(20, 10), end=(120, 110), band_px=1)
    cal = Calibration(mm_per_px_x=0.1, mm_per_px_y=0.1, source="user")
    result = measure_thickness(img, line, cal, overrides={"skin": 0.0, "dermis_bottom": 10.0})
    dermal = next(o for o in result.observations if o.code == "dermal-thickness")
    assert dermal.value == pytest.approx(1.0)  # 10 samples of 1 px along a 45 degree line


def test_line_outside_image() -> None:
    with pytest.raises(ImagingError, match="leaves the"):
        measure_thickness(np.zeros((50, 50, 3), np.uint8), ScanLine(start=(1, 0), end=(1, 40)), CAL)


@settings(max_examples=30, deadline=None)
@given(
    shift=st.integers(0, 7),
    dx=st.floats(-500, 500),
    dy=st.floats(-500, 500),
)
def test_polygon_area_invariances(shift: int, dx: float, dy: float) -> None:
    # A convex octagon: the area does not depend on the starting vertex or on a translation.
    octagon = [(100 + 50 * math.cos(k * math.pi / 4), 100 + 50 * math.sin(k * math.pi / 4)) for k in range(8)]
    base = polygon_area_mm2(octagon, CAL)
    rotated = octagon[shift:] + octagon[:shift]
    moved = [(x + dx, y + dy) for x, y in rotated]
    assert polygon_area_mm2(moved, CAL) == pytest.approx(base, rel=1e-9)
    # Regular octagon of circumradius R: 2 sqrt(2) R^2, with R scaled per axis (0.1 and 0.2 mm/px).
    assert base == pytest.approx(2 * math.sqrt(2) * 50 * 50 * 0.1 * 0.2, rel=1e-9)
