from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from regenguide.imaging.dicom_io import frame_rgb, read_dataset, read_study
from regenguide.imaging.phantom import (
    PhantomSpec,
    log_compress,
    make_phantom,
    phantom_dataset,
    rayleigh_envelope,
    write_phantom,
)


def test_speckle_envelope_is_rayleigh() -> None:
    """Fully developed speckle: E[A^2] = echo^2 and point SNR mean/sd = sqrt(pi / (4 - pi)) = 1.913."""
    rng = np.random.default_rng(0)
    echo = np.full((384, 384), 2.0)
    env = rayleigh_envelope(echo, (1.0, 2.0), rng)[32:-32, 32:-32]
    assert np.mean(env**2) == pytest.approx(4.0, rel=0.05)
    assert env.mean() / env.std() == pytest.approx(math.sqrt(math.pi / (4 - math.pi)), rel=0.05)
    assert env.mean() == pytest.approx(
        2.0 * math.sqrt(math.pi) / 2, rel=0.05
    )  # Rayleigh mean sigma*sqrt(pi/2)


def test_log_compression_closed_form() -> None:
    ref = 4.0
    out = log_compress(np.array([ref, ref / 2, ref * 10 ** (-50 / 20), ref * 1e-4]), 50.0, ref)
    assert out.tolist() == [255, round(255 * (1 - 20 * math.log10(2) / 50)), 0, 0]


def test_phantom_is_deterministic_and_calibrated(tmp_path: Path) -> None:
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    ta = write_phantom(a, seed=11)
    tb = write_phantom(b, seed=11)
    assert ta == tb
    assert np.array_equal(frame_rgb(read_dataset(a)), frame_rgb(read_dataset(b)))
    meta = read_study(a)
    assert meta.sop_instance_uid == read_study(b).sop_instance_uid
    assert meta.sop_class_uid == "1.2.840.10008.5.1.4.1.1.6.1"
    assert meta.burned_in_annotation == "NO"
    tissue = meta.regions[0]
    # Region corners are inclusive in DICOM: the half-open box (40, 40, 600, 470) ends at 599, 469.
    assert (tissue.x0, tissue.y0, tissue.x1, tissue.y1) == (40, 40, 599, 469)
    assert meta.calibration is not None and meta.calibration.mm_per_px_y == pytest.approx(0.05)
    other = make_phantom(12).truth
    assert other.vessels != ta.vessels


def test_truth_geometry() -> None:
    spec = PhantomSpec()
    ph = make_phantom(3, spec)
    t = ph.truth
    assert t.skin_line_px == pytest.approx(spec.tissue_box[1] + 0.6 / spec.mm_per_px)  # below 0.6 mm of gel
    assert t.layer_tops_mm["epidermis"] == 0.0
    assert t.layer_tops_mm["subcutis"] == pytest.approx(0.15 + 1.6)
    for v in t.vessels:
        assert v.centre_px[1] == pytest.approx(t.skin_line_px + v.depth_mm / spec.mm_per_px)
        cx0, cy0, cx1, cy1 = t.colour_box
        assert cx0 <= v.centre_px[0] < cx1 and cy0 <= v.centre_px[1] < cy1
    # The burned-in colour bar lies outside both regions.
    bx0 = t.colour_bar_box[0]
    assert bx0 >= spec.tissue_box[2]


def test_multiframe_dataset_has_cine_attributes() -> None:
    ph = make_phantom(
        0,
        PhantomSpec(
            width_px=128,
            height_px=128,
            tissue_box=(8, 20, 120, 126),
            colour_box=(10, 20, 118, 120),
            frames=3,
            n_vessels=(1, 1),
        ),
    )
    ds = phantom_dataset(ph)
    assert int(ds.NumberOfFrames) == 3 and float(ds.FrameTime) == pytest.approx(33.333)
    assert ds.FrameIncrementPointer == 0x00181063
    assert len(ds.PixelData) == 3 * 128 * 128 * 3
