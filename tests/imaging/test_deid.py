from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom import examples
from pydicom.dataset import Dataset

from regenguide.imaging.deid import UidMapper, deidentify, deidentify_file, profile_tags
from regenguide.imaging.dicom_io import frame_rgb, read_dataset
from regenguide.imaging.phantom import PhantomTruth


def _with_identifiers(ds: Dataset) -> Dataset:
    ds = copy.deepcopy(ds)
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0042"
    ds.PatientBirthDate = "19800101"
    ds.PatientAddress = "1 Main Street"
    ds.OtherPatientIDs = "ALT-7"
    ds.ReferringPhysicianName = "Smith^John"
    ds.OperatorsName = "Sonographer^Ann"
    ds.InstitutionName = "Some Clinic"
    ds.InstitutionAddress = "2 Side Street"
    ds.AccessionNumber = "ACC123"
    ds.DeviceSerialNumber = "SN-1"
    ds.PatientComments = "allergic to latex"
    ds.add_new((0x0009, 0x0010), "LO", "ACME private")
    ds.add_new((0x0009, 0x1001), "LO", "secret private value")
    return ds


def test_listed_attributes_are_gone_or_emptied() -> None:
    ds = _with_identifiers(examples.rgb_color)
    report = deidentify(ds, uid_mapper=UidMapper("k"))
    tags = profile_tags()
    present = {int(e.tag) for e in ds}
    for tag in tags["X_TAGS"]:
        if len(tag) == 2:
            assert (tag[0] << 16 | tag[1]) not in present, f"X attribute {tag} still present"
    for keyword in ("PatientAddress", "OtherPatientIDs", "InstitutionAddress", "PatientComments"):
        assert keyword not in ds
    for keyword in ("OperatorsName", "InstitutionName", "DeviceSerialNumber"):  # X/Z/D: dummy at most
        assert str(ds.get(keyword, "")) in ("", "ANONYMIZED")
    for keyword in ("PatientName", "ReferringPhysicianName", "AccessionNumber"):  # Z: kept but empty
        assert str(ds.get(keyword, "")) == ""
    assert "Doe" not in str(ds) and "MRN-0042" not in str(ds) and "19800101" not in str(ds)
    assert not any(e.tag.is_private for e in ds)
    assert report.private_removed == 2
    assert "PatientAddress" in report.removed
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    # The image itself is untouched.
    assert np.array_equal(frame_rgb(ds), frame_rgb(examples.rgb_color))


def test_uids_are_new_and_consistently_mapped() -> None:
    a = _with_identifiers(examples.rgb_color)
    b = _with_identifiers(examples.rgb_color)
    b.SOPInstanceUID = "1.2.3.4.5.6"  # another image of the same study and series
    old_study = a.StudyInstanceUID
    mapper = UidMapper("project-secret")
    deidentify(a, uid_mapper=mapper)
    deidentify(b, uid_mapper=mapper)
    assert a.StudyInstanceUID != old_study
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SOPClassUID == examples.rgb_color.SOPClassUID  # class UIDs are kept
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    # Same secret in another run gives the same UIDs; another secret does not.
    c = _with_identifiers(examples.rgb_color)
    deidentify(c, uid_mapper=UidMapper("project-secret"))
    assert c.StudyInstanceUID == a.StudyInstanceUID
    d = _with_identifiers(examples.rgb_color)
    deidentify(d, uid_mapper=UidMapper("other"))
    assert d.StudyInstanceUID != a.StudyInstanceUID


def test_burned_in_flag_is_reported() -> None:
    ds = copy.deepcopy(examples.rgb_color)
    report = deidentify(ds)
    assert report.burned_in_annotation is None and report.burned_in_risk
    assert any("Burned In Annotation" in w for w in report.warnings)
    ds = copy.deepcopy(examples.rgb_color)
    ds.BurnedInAnnotation = "NO"
    assert deidentify(ds).burned_in_risk is False


def test_pseudonym_and_masking_outside_regions(
    phantom_file: tuple[Path, PhantomTruth], tmp_path: Path
) -> None:
    path, truth = phantom_file
    out = tmp_path / "deid.dcm"
    report = deidentify_file(path, out, pseudonym="STUDY-001", mask_outside_regions=True)
    ds = read_dataset(out)
    assert ds.PatientID == "STUDY-001" and str(ds.PatientName) == "STUDY-001"
    rgb = frame_rgb(ds)
    x0, y0, x1, y1 = truth.tissue_box
    outside = np.ones(rgb.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert rgb[outside].max() == 0  # the burned-in caption and colour bar are gone
    original = frame_rgb(read_dataset(path))
    assert np.array_equal(rgb[y0:y1, x0:x1], original[y0:y1, x0:x1])
    assert report.masked_boxes and not report.warnings


def test_masking_needs_regions_that_fit() -> None:
    ds = copy.deepcopy(examples.ybr_color)
    report = deidentify(ds, mask_outside_regions=True)
    assert any("no ultrasound region fits" in w for w in report.warnings)


def test_mask_boxes_on_jpeg_cine_decodes_to_rgb() -> None:
    ds = copy.deepcopy(examples.ybr_color)
    report = deidentify(ds, mask_boxes=[(0, 0, 80, 40)])
    assert report.masked_boxes == [(0, 0, 80, 40)]
    assert ds.PhotometricInterpretation == "RGB" and ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert int(ds.NumberOfFrames) == 30
    assert frame_rgb(ds, 10)[:40, :80].max() == 0


@pytest.mark.parametrize("name", ["rgb_color", "palette_color", "ybr_color"])
def test_every_example_survives_and_round_trips(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.dcm"
    deidentify_file(examples.get_path(name), out)
    ds = read_dataset(out)
    assert ds.PatientIdentityRemoved == "YES"
    frame_rgb(ds)
