"""Doppler extraction speed at 640x480 on one core (target >= 60 fps, twice a 30 fps colour cine;
`imaging.frame-rate-norms`). Writes bench/results/doppler.json.

Run: .venv/bin/python bench/bench_doppler.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from pydicom import examples  # noqa: E402

from regenguide.imaging.dicom_io import frame_rgb, metadata_from_dataset  # noqa: E402
from regenguide.imaging.doppler import analyse_frame, bmode_area  # noqa: E402
from regenguide.imaging.phantom import make_phantom, phantom_dataset  # noqa: E402

TARGET_FPS = 60.0


def _time(fn, frames: list[np.ndarray], repeats: int = 5) -> dict[str, float]:
    for f in frames[:3]:
        fn(f)  # warm-up
    per_run = []
    for _ in range(repeats):
        start = time.perf_counter()
        for f in frames:
            fn(f)
        per_run.append((time.perf_counter() - start) / len(frames))
    best, median = min(per_run), statistics.median(per_run)
    return {"ms_per_frame_median": 1000 * median, "ms_per_frame_best": 1000 * best, "fps_median": 1 / median}


def main() -> dict[str, object]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    ph = make_phantom(7)
    ds = phantom_dataset(ph)
    meta = metadata_from_dataset(ds)
    phantom_frames = [frame_rgb(ds, 0)] * 30
    real = frame_rgb(examples.jpeg2k)  # the GE power-Doppler image at its full 640x480
    assert real.shape == (480, 640, 3)
    real_frames = [real] * 30
    area = bmode_area(real)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cases = {
        "phantom_colour_flow_region": _time(lambda f: analyse_frame(f, metadata=meta), phantom_frames),
        "real_power_doppler_fixed_box": _time(
            lambda f: analyse_frame(f, box=(60, 120, 580, 340), mode="power"), real_frames
        ),
        "real_power_doppler_area_reused": _time(
            lambda f: analyse_frame(f, area=area, mode="power"), real_frames
        ),
        "real_power_doppler_auto_area_each_frame": _time(
            lambda f: analyse_frame(f, mode="power"), real_frames
        ),
    }
    result = {
        "benchmark": "Doppler flow extraction, frames per second at 640x480 on one core",
        "target_fps": TARGET_FPS,
        "frame_size": [480, 640],
        "cases": cases,
        "meets_target": {name: case["fps_median"] >= TARGET_FPS for name, case in cases.items()},
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {
            "before": load_before,
            "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "note": "auto_area_each_frame finds the B-mode area on every frame; a cine reuses one area "
        "(area_reused), and scanner files with a colour-flow region need none.",
    }
    out = Path(__file__).resolve().parent / "results" / "doppler.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    res = main()
    for name, case in res["cases"].items():  # type: ignore[union-attr]
        print(f"{name:45s} {case['fps_median']:7.1f} fps  ({case['ms_per_frame_median']:.2f} ms/frame)")
