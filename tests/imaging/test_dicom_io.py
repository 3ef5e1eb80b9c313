from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom import examples

from regenguide.imaging.dicom_io import (
    CalibrationMissing,
    IdentityMismatch,
    NotDicomError,
    PatientIdentity,
    check_identity,
    frame_rgb,
    metadata_from_dataset,
    read_dataset,
    read_study,
    store_dicom,
)
from regenguide.imaging.phantom import PhantomTruth


def test_rgb_example_metadata_has_no_calibration() -> None:
    meta = read_study(examples.get_path("rgb_color"))
    assert meta.modality == "US"
    assert (meta.rows, meta.columns, meta.frames) == (240, 320, 1)
    assert meta.photometric_interpretation == "RGB"
    assert meta.patient.id == "13US1"
    assert meta.calibration is None
    with pytest.raises(CalibrationMissing, match="no Sequence of Ultrasound Regions"):
        meta.require_calibration()


def test_multiframe_jpeg_ybr_decodes_to_rgb_frames() -> None:
    ds = examples.ybr_color
    meta = metadata_from_dataset(ds)
    assert meta.frames == 30
    assert meta.frame_time_ms == pytest.approx(33.333)
    assert meta.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    frame = frame_rgb(ds, 29)
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    # B-mode after YBR->RGB: grey pixels (R, G, B within a few levels of each other) dominate.
    spread = frame.max(axis=2).astype(int) - frame.min(axis=2)
    assert np.mean(spread <= 8) > 0.95
    with pytest.raises(ValueError, match="frame 30 out of range"):
        frame_rgb(ds, 30)


def test_region_outside_matrix_is_not_trusted_but_a_fitting_one_is() -> None:
    ds = copy.deepcopy(examples.ybr_color)
    meta = metadata_from_dataset(ds)
    assert meta.regions[0].data_type_name == "tissue"
    assert meta.regions[0].fits_image is False
    assert meta.calibration is None
    assert "resized or cropped" in meta.warnings[0]
    region = ds.SequenceOfUltrasoundRegions[0]
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 10, 10
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 300, 230
    meta = metadata_from_dataset(ds)
    assert meta.calibration is not None
    # PhysicalDeltaX 0.05104970559477806 cm -> 0.5104970559477806 mm per pixel.
    assert meta.calibration.mm_per_px_x == pytest.approx(0.5104970559477806)
    assert meta.calibration.source == "ultrasound_region"


def test_palette_colour_goes_through_the_lut() -> None:
    ds = examples.palette_color
    rgb = frame_rgb(ds)
    assert rgb.shape == (350, 800, 3) and rgb.dtype == np.uint8
    assert rgb.max() > 200  # 16-bit LUT scaled to 8 bits, not clipped to black
    meta = metadata_from_dataset(ds)
    assert [r.data_type_name for r in meta.regions] == ["tissue", "ecg_trace"]
    assert meta.regions[1].units_x == "seconds"


def test_phantom_calibration(phantom_file: tuple[Path, PhantomTruth]) -> None:
    path, truth = phantom_file
    meta = read_study(path)
    assert meta.calibration is not None
    assert meta.calibration.mm_per_px_x == pytest.approx(truth.mm_per_px)
    assert [r.data_type_name for r in meta.regions] == ["tissue", "color_flow"]
    assert all(r.fits_image for r in meta.regions)


def test_identity_match_and_normalisation() -> None:
    meta = read_study(examples.get_path("rgb_color"))
    check_identity(meta, PatientIdentity(name="compressedsamples^us1^^", id="13US1"))


def test_identity_mismatch_gives_every_reason() -> None:
    meta = read_study(examples.get_path("rgb_color"))
    with pytest.raises(IdentityMismatch) as info:
        check_identity(meta, PatientIdentity(name="Doe^Jane", id="13US1", birth_date="19800101"))
    reasons = info.value.reasons
    assert len(reasons) == 2
    assert "patient name differs" in reasons[0] and "'CompressedSamples^US1'" in reasons[0]
    assert "birth date missing in the DICOM header" in reasons[1]
    check_identity(meta, PatientIdentity(id="13US1", birth_date="19800101"), allow_missing=True)
    with pytest.raises(IdentityMismatch, match="patient id differs"):
        check_identity(meta, PatientIdentity(id="13US2"))


def test_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    src = examples.get_path("rgb_color")
    rel = store_dicom(src, tmp_path)
    assert rel.startswith("dicom/") and rel.endswith(".dcm")
    stored = tmp_path / rel
    assert stored.read_bytes() == Path(src).read_bytes()
    assert store_dicom(src, tmp_path) == rel
    assert len(list((tmp_path / "dicom").rglob("*.dcm"))) == 1
    other = store_dicom(examples.get_path("ybr_color"), tmp_path)
    assert other != rel


def test_not_dicom_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "x.dcm"
    junk.write_bytes(b"hello")
    with pytest.raises(NotDicomError, match="not a readable DICOM file"):
        read_dataset(junk)
    with pytest.raises(NotDicomError, match="not a readable DICOM"):
        store_dicom(junk, tmp_path / "store")
    assert not (tmp_path / "store").exists()
    with pytest.raises(NotDicomError, match="file not found"):
        read_study(tmp_path / "missing.dcm")


def test_ingest_checks_identity_before_storing(tmp_path: Path) -> None:
    from regenguide.imaging.dicom_io import ingest_dicom

    src = examples.get_path("rgb_color")
    with pytest.raises(IdentityMismatch, match="patient id differs"):
        ingest_dicom(src, tmp_path, PatientIdentity(id="SOMEONE-ELSE"))
    assert not (tmp_path / "dicom").exists()  # nothing stored for the wrong patient
    done = ingest_dicom(src, tmp_path, PatientIdentity(id="13US1"))
    assert (tmp_path / done.stored_path).is_file()
    assert done.sha256 in done.stored_path and len(done.sha256) == 64
    assert done.size_bytes == Path(src).stat().st_size
    assert done.metadata.sop_instance_uid == read_study(src).sop_instance_uid
    ref = done.reference(frame=0, point_px=(10.0, 20.0))
    assert ref.stored_path == done.stored_path and ref.sop_instance_uid == done.metadata.sop_instance_uid
    assert "frame 0" in ref.label()


def test_acquired_at_prefers_acquisition_then_content_then_study() -> None:
    assert metadata_from_dataset(examples.palette_color).acquired_at == "2011-05-25T14:56:28.350000"
    assert metadata_from_dataset(examples.ybr_color).acquired_at == "2016-05-03T12:15:35"  # content time
    assert (
        metadata_from_dataset(examples.rgb_color).acquired_at == "2004-08-26T18:50:59-04:00"
    )  # study + offset
    ds = copy.deepcopy(examples.rgb_color)
    with pytest.warns(UserWarning):
        ds.StudyDate = "not a date"
    assert metadata_from_dataset(ds).acquired_at is None


# The 100x100 "SC_rgb" test image shipped with pydicom, in many encodings: ten horizontal bands whose
# colours are known (pydicom's own pixel-handler tests use the same values), sampled at column 50.
SC_RGB_BANDS = [
    (255, 0, 0),
    (255, 128, 128),
    (0, 255, 0),
    (128, 255, 128),
    (0, 0, 255),
    (128, 128, 255),
    (0, 0, 0),
    (64, 64, 64),
    (192, 192, 192),
    (255, 255, 255),
]


@pytest.mark.parametrize(
    ("name", "syntax", "photometric", "tolerance"),
    [
        ("SC_rgb_rle.dcm", "1.2.840.10008.1.2.5", "RGB", 0),  # RLE lossless
        ("SC_rgb_rle_16bit.dcm", "1.2.840.10008.1.2.5", "RGB", 0),  # 16 bits per sample
        ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70", "RGB", 0),  # JPEG lossless
        ("SC_rgb_gdcm_KY.dcm", "1.2.840.10008.1.2.4.91", "RGB", 0),  # JPEG 2000
        ("SC_rgb_jls_lossy_line.dcm", "1.2.840.10008.1.2.4.81", "RGB", 3),  # JPEG-LS near-lossless
        ("SC_rgb_dcmtk_+eb+cr.dcm", "1.2.840.10008.1.2.4.50", "RGB", 2),  # JPEG baseline, RGB
        ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50", "YBR_FULL", 6),  # JPEG baseline, YBR
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", "1.2.840.10008.1.2.4.50", "YBR_FULL_422", 6),  # subsampled
        ("SC_ybr_full_422_uncompressed.dcm", "1.2.840.10008.1.2.1", "YBR_FULL_422", 6),
    ],
)
def test_compressed_and_ybr_encodings_decode_to_the_known_colours(
    name: str, syntax: str, photometric: str, tolerance: int
) -> None:
    from pydicom.data import get_testdata_file

    ds = read_dataset(get_testdata_file(name))
    meta = metadata_from_dataset(ds)
    assert (meta.transfer_syntax_uid, meta.photometric_interpretation) == (syntax, photometric)
    rgb = frame_rgb(ds)
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8
    got = rgb[5::10, 50].astype(int)
    assert np.abs(got - np.array(SC_RGB_BANDS)).max() <= tolerance


@pytest.mark.parametrize("name", ["SC_rgb_rle_2frame.dcm", "SC_rgb_rle_32bit_2frame.dcm"])
def test_multiframe_rle_frames_are_decoded_one_by_one(name: str) -> None:
    from pydicom.data import get_testdata_file

    ds = read_dataset(get_testdata_file(name))
    assert metadata_from_dataset(ds).frames == 2
    first, second = frame_rgb(ds, 0), frame_rgb(ds, 1)
    assert np.array_equal(first[5::10, 50], np.array(SC_RGB_BANDS, np.uint8))
    # The second frame of these files is the first one inverted (within one level of rounding).
    assert np.abs(second.astype(int) - (255 - first.astype(int))).max() <= 1


def test_jpeg2000_ultrasound_example_decodes() -> None:
    ds = examples.jpeg2k  # GE power-Doppler image, JPEG 2000 lossless, YBR_RCT
    meta = metadata_from_dataset(ds)
    assert (meta.transfer_syntax_uid, meta.photometric_interpretation) == ("1.2.840.10008.1.2.4.90", "YBR_RCT")
    rgb = frame_rgb(ds)
    assert rgb.shape == (480, 640, 3)
    # B-mode background stays grey after the colour transform: R = G = B on most pixels.
    spread = rgb.max(axis=2).astype(int) - rgb.min(axis=2)
    assert np.mean(spread == 0) > 0.85


def test_ingest_uses_the_metadata_the_caller_already_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An import reads the header once: with `metadata` given, ingest does not parse the file again, and the
    identity is still checked against it."""
    from regenguide.imaging import dicom_io

    src = examples.get_path("rgb_color")
    metadata = read_study(src)
    monkeypatch.setattr(dicom_io, "read_study", lambda *a, **k: pytest.fail("read the file again"))
    with pytest.raises(IdentityMismatch):
        dicom_io.ingest_dicom(src, tmp_path, PatientIdentity(id="SOMEONE-ELSE"), metadata=metadata)
    done = dicom_io.ingest_dicom(src, tmp_path, PatientIdentity(id="13US1"), metadata=metadata)
    assert done.metadata == metadata and done.newly_stored
    assert not dicom_io.ingest_dicom(src, tmp_path, PatientIdentity(id="13US1"), metadata=metadata).newly_stored
