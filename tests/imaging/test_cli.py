from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import examples
from typer.testing import CliRunner

from regenguide.cli import app
from regenguide.imaging.dicom_io import read_study
from regenguide.imaging.phantom import PhantomTruth

runner = CliRunner()
RGB = str(examples.get_path("rgb_color"))
YBR = str(examples.get_path("ybr_color"))


def _json(args: list[str]) -> dict[str, object]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_doppler_json_keys_on_example(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.png"
    data = _json(
        [
            "imaging",
            "doppler",
            RGB,
            "--mode",
            "power",
            "--box",
            "30,60,290,170",
            "--json",
            "--overlay",
            str(overlay),
        ]
    )
    assert {"flow_pixels", "flow_fraction", "vessels"} <= set(data)
    assert data["flow_pixels"] == pytest.approx(3824, abs=40)
    vessel = data["vessels"][0]
    assert {"centroid_px", "depth_px", "diameter_px", "depth_mm", "diameter_mm", "direction"} <= set(vessel)
    assert vessel["depth_mm"] is None and vessel["diameter_mm"] is None  # no calibration
    assert data["flow_fraction"] == pytest.approx(data["flow_pixels"] / data["analysed_pixels"])
    for v in data["vessels"]:
        assert len(v["centroid_px"]) == 2 and v["depth_px"] is not None and v["diameter_px"] > 0
        assert v["direction"] == "undetermined"  # power Doppler has no direction
    with Image.open(overlay) as img:
        assert img.size == (640, 480)  # small images are drawn at twice the size


def test_doppler_calibrated_phantom_and_frames(phantom_file: tuple[Path, PhantomTruth]) -> None:
    path, truth = phantom_file
    data = _json(["imaging", "doppler", str(path), "--json"])
    assert len(data["vessels"]) == len(truth.vessels)
    assert all(v["depth_mm"] is not None and v["diameter_mm"] is not None for v in data["vessels"])
    assert {v["direction"] for v in data["vessels"]} <= {"towards", "away"}
    frames = _json(["imaging", "doppler", YBR, "--all-frames", "--json"])["frames"]
    assert len(frames) == 30 and all(f["flow_pixels"] == 0 for f in frames)


def test_doppler_mm_per_px_override() -> None:
    data = _json(["imaging", "doppler", RGB, "--box", "30,60,290,170", "--mm-per-px", "0.1", "--json"])
    v = data["vessels"][0]
    assert v["depth_mm"] == pytest.approx(v["depth_px"] * 0.1)


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_text("not dicom")
    result = runner.invoke(app, ["imaging", "doppler", str(junk), "--json"])
    assert result.exit_code == 2 and "not a readable DICOM file" in result.stderr
    result = runner.invoke(app, ["imaging", "doppler", RGB, "--frame", "3"])
    assert result.exit_code == 2 and "out of range" in result.stderr
    result = runner.invoke(app, ["imaging", "doppler", RGB, "--box", "1,2,3"])
    assert result.exit_code == 2 and "x0,y0,x1,y1" in result.stderr
    result = runner.invoke(app, ["imaging", "measure", "distance", RGB, "--from", "0,0", "--to", "10,0"])
    assert result.exit_code == 2 and "needs a physical calibration" in result.stderr
    assert "Traceback" not in result.output


def test_info_json() -> None:
    data = _json(["imaging", "info", YBR, "--json"])
    assert data["frames"] == 30 and data["calibration"] is None
    assert data["regions"][0]["data_type_name"] == "tissue"
    text = runner.invoke(app, ["imaging", "info", YBR])
    assert text.exit_code == 0 and "outside the image" in text.stdout


def test_phantom_and_measure_commands(tmp_path: Path) -> None:
    out = tmp_path / "p.dcm"
    truth = _json(["imaging", "phantom", str(out), "--seed", "3", "--json"])
    assert read_study(out).calibration is not None
    assert truth["seed"] == 3 and truth["vessels"]
    d = _json(["imaging", "measure", "distance", str(out), "--from", "100,100", "--to", "100,160", "--json"])
    assert d["observations"][0]["value"] == pytest.approx(3.0)  # 60 px x 0.05 mm
    a = _json(
        [
            "imaging",
            "measure",
            "area",
            str(out),
            "--point",
            "0,0",
            "--point",
            "100,0",
            "--point",
            "100,100",
            "--point",
            "0,100",
            "--json",
        ]
    )
    assert a["observations"][0]["value"] == pytest.approx(25.0) and a["observations"][0]["unit"] == "mm2"
    png = tmp_path / "t.png"
    t = _json(
        [
            "imaging",
            "measure",
            "thickness",
            str(out),
            "--line",
            "70,40,70,440",
            "--json",
            "--overlay",
            str(png),
        ]
    )
    codes = {o["code"]: o["value"] for o in t["observations"]}
    assert codes["dermal-thickness"] == pytest.approx(1.75, abs=0.25)
    assert png.exists()
    edited = _json(
        [
            "imaging",
            "measure",
            "thickness",
            str(out),
            "--line",
            "70,40,70,440",
            "--skin",
            "10",
            "--dermis-bottom",
            "50",
            "--json",
        ]
    )
    assert edited["observations"][0]["value"] == pytest.approx(2.0) and edited["observations"][0]["edited"]
    v = _json(["imaging", "measure", "volume", "--ellipsoid", "10,10,10", "--json"])
    assert v["observations"][0]["value"] == pytest.approx(0.5235987756, rel=1e-9)
    s = _json(["imaging", "measure", "volume", "--slice-areas", "100,100", "--spacing", "2", "--json"])
    assert s["observations"][0]["value"] == pytest.approx(0.4)
    bad = runner.invoke(app, ["imaging", "measure", "volume", "--slice-areas", "100"])
    assert bad.exit_code == 2 and "--spacing" in bad.stderr


def test_deidentify_command(tmp_path: Path) -> None:
    out = tmp_path / "d.dcm"
    data = _json(
        ["imaging", "deidentify", RGB, str(out), "--uid-secret", "s3cret", "--pseudonym", "S-01", "--json"]
    )
    assert data["burned_in_risk"] is True and "PatientBirthTime" in data["removed"]
    meta = read_study(out)
    assert meta.patient.id == "S-01"
    again = tmp_path / "e.dcm"
    _json(["imaging", "deidentify", RGB, str(again), "--uid-secret", "s3cret", "--json"])
    assert read_study(again).study_instance_uid == meta.study_instance_uid
    same = runner.invoke(app, ["imaging", "deidentify", str(out), str(out)])
    assert same.exit_code == 2 and "another file" in same.stderr


def test_map_and_check_commands(tmp_path: Path) -> None:
    dcm = tmp_path / "cine.dcm"
    _json(["imaging", "phantom", str(dcm), "--seed", "2", "--frames", "3", "--json"])
    vmap = _json(
        [
            "imaging",
            "map",
            str(dcm),
            "--region",
            "temple",
            "--side",
            "left",
            "--kind",
            "artery",
            "--landmark",
            "tragus",
            "--landmark-x",
            "40",
            "--all-frames",
            "--layers-line",
            "70,40,70,440",
        ]
    )
    truth = _json(["imaging", "phantom", str(tmp_path / "again.dcm"), "--seed", "2", "--json"])
    assert len(vmap["vessels"]) == len(truth["vessels"])
    assert vmap["layers"]["dermis_bottom_mm"] == pytest.approx(1.75, abs=0.25)
    assert vmap["acquired_on"] == "2026-01-01"
    assert all(v["image"]["point_px"] is not None for v in vmap["vessels"])
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(vmap))
    shallowest = min(v["depth_mm"] for v in vmap["vessels"])
    plan = {
        "indication": "temple hollowing",
        "modality": "microfat",
        "injections": [{"region": "temple", "side": "left", "depth_mm": round(shallowest, 1)}],
    }
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    findings = _json(["imaging", "check", str(plan_file), "--map", str(map_file), "--json"])["findings"]
    assert [f["rule"] for f in findings][:1] == ["imaging.artery_within_margin"]
    missing = _json(["imaging", "check", str(plan_file), "--json"])["findings"]
    assert [f["rule"] for f in missing] == ["imaging.vascular_map_missing"]
    plan_file.write_text(json.dumps({"indication": "x", "modality": "not-a-modality"}))
    bad = runner.invoke(app, ["imaging", "check", str(plan_file)])
    assert bad.exit_code == 2 and "modality" in bad.stderr


def test_doppler_all_frames_reports_tracks(tmp_path: Path) -> None:
    dcm = tmp_path / "cine.dcm"
    truth = _json(["imaging", "phantom", str(dcm), "--seed", "4", "--frames", "3", "--json"])
    data = _json(["imaging", "doppler", str(dcm), "--all-frames", "--json"])
    assert len(data["frames"]) == 3
    assert len(data["tracks"]) == len(truth["vessels"])
    assert all(t["persistence"] == 1.0 for t in data["tracks"])


def test_single_frame_of_a_cine_and_overlay_marks(tmp_path: Path) -> None:
    data = _json(["imaging", "doppler", YBR, "--frame", "12", "--json"])
    assert data["frame"] == 12 and data["flow_pixels"] == 0
    dcm = tmp_path / "p.dcm"
    _json(["imaging", "phantom", str(dcm), "--seed", "1", "--json"])
    png = tmp_path / "o.png"
    result = _json(["imaging", "doppler", str(dcm), "--json", "--overlay", str(png)])
    with Image.open(png) as img:
        arr = np.asarray(img.convert("RGB"))
    assert arr.shape == (480, 640, 3)  # 640x480 phantoms are drawn at their own size
    for v in result["vessels"]:
        x, y = v["centroid_px"]
        r = v["diameter_px"] / 2
        ring = arr[int(round(y)), int(round(x + r)) - 1 : int(round(x + r)) + 2]
        assert (ring == (0, 230, 255)).all(axis=1).any(), "vessel circle drawn in cyan"
