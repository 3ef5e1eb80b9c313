from __future__ import annotations

import numpy as np
import pytest

from regenguide.imaging.cine import track_vessels
from regenguide.imaging.dicom_io import Calibration, CalibrationMissing
from regenguide.imaging.doppler import FlowDirection, extract_flow
from regenguide.imaging.vascular import vascular_map_from_tracks

CAL = Calibration(mm_per_px_x=0.1, mm_per_px_y=0.1, source="user")


def _frame(discs: list[tuple[int, int, int, tuple[int, int, int]]]) -> np.ndarray:
    img = np.full((120, 160, 3), 80, np.uint8)
    yy, xx = np.mgrid[0:120, 0:160]
    for cx, cy, r, colour in discs:
        img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = colour
    return img


def _clip() -> list:
    red, blue = (230, 30, 0), (0, 60, 230)
    frames = [
        [(40, 50, 6, red), (110, 80, 4, blue)],
        [(41, 50, 8, red), (110, 81, 4, blue), (140, 20, 2, red)],  # a two-frame-wide noise blob
        [(110, 80, 4, blue)],  # the artery has no colour in diastole
        [(40, 51, 7, red), (111, 80, 4, blue)],
    ]
    return [
        extract_flow(_frame(f), box=(0, 0, 160, 120), calibration=CAL, skin_line_px=10.0, frame=i)
        for i, f in enumerate(frames)
    ]


def test_tracks_link_vessels_across_frames() -> None:
    tracks = track_vessels(_clip())
    assert len(tracks) == 3
    artery = next(t for t in tracks if t.direction is FlowDirection.towards and t.persistence > 0.5)
    assert artery.frames == [0, 1, 3] and artery.persistence == pytest.approx(0.75)
    assert artery.depth_mm == pytest.approx((50 + 50 + 51) / 3 * 0.1 - 1.0, abs=0.05)
    assert artery.diameter_mm == pytest.approx(1.6, abs=0.1)  # widest frame, r = 8 px
    assert artery.colour_area_pulsatility > 0.3
    vein = next(t for t in tracks if t.direction is FlowDirection.away)
    assert vein.persistence == 1.0 and vein.colour_area_pulsatility < 0.2


def test_map_from_tracks_drops_transient_blobs() -> None:
    tracks = track_vessels(_clip())
    vmap = vascular_map_from_tracks(
        tracks, region="temple", min_persistence=0.5, landmark_x_px=0, mm_per_px_x=0.1
    )
    assert len(vmap.vessels) == 2
    assert sorted(round(v.lateral_offset_mm or 0, 1) for v in vmap.vessels) == pytest.approx(
        [4.0, 11.0], abs=0.2
    )
    uncalibrated = track_vessels([extract_flow(_frame([(40, 50, 6, (230, 30, 0))]), box=(0, 0, 160, 120))])
    with pytest.raises(CalibrationMissing):
        vascular_map_from_tracks(uncalibrated, region="temple")
    assert track_vessels([]) == []
