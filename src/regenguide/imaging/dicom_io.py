"""DICOM ingestion for ultrasound: metadata, calibration, frames, identity check and storage.

Calibration comes from the Sequence of Ultrasound Regions (PS3.3 C.8.5.5, US Region Calibration
module, citation `imaging.dicom-ps3-3-us-region`): each region gives its pixel box, its data type
(tissue, colour flow, spectral Doppler, ...) and the physical size of one pixel (PhysicalDeltaX/Y)
in the unit named by PhysicalUnitsX/YDirection (3 = cm). A region whose box does not fit the pixel
matrix belongs to a resized or cropped export, so its calibration is not trusted and a warning says
so: a wrong scale is worse than none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.valuerep import DT

from regenguide.imaging.refs import ImageReference


class ImagingError(ValueError):
    """Base class of the imaging errors; the message is meant for the user."""


class NotDicomError(ImagingError):
    """The file is not a readable DICOM file."""


class UnsupportedImageError(ImagingError):
    """The DICOM file has no pixel data this module can turn into an RGB frame."""


class CalibrationMissing(ImagingError):
    """A measurement in millimetres was asked for an image without a usable physical calibration."""


class IdentityMismatch(ImagingError):
    """The patient identity in the DICOM header differs from the patient the study is filed under."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("patient identity mismatch: " + "; ".join(self.reasons))


class RegionDataType(IntEnum):
    """Region Data Type (0018,6014), PS3.3 C.8.5.5.1.2 (`imaging.dicom-ps3-3-us-region`)."""

    none = 0
    tissue = 1
    color_flow = 2
    pw_spectral_doppler = 3
    cw_spectral_doppler = 4
    doppler_mean_trace = 5
    doppler_mode_trace = 6
    doppler_max_trace = 7
    volume_trace = 8
    ecg_trace = 10
    pulse_trace = 11
    phonocardiogram_trace = 12
    gray_bar = 13
    color_bar = 14
    integrated_backscatter = 15
    area_trace = 16
    d_area_dt = 17
    other_physiological_input = 18


# Physical Units X/Y Direction (0018,6024/6026), PS3.3 C.8.5.5.1.15 (`imaging.dicom-ps3-3-us-region`).
PHYSICAL_UNITS: dict[int, str] = {
    0: "none",
    1: "percent",
    2: "dB",
    3: "cm",
    4: "seconds",
    5: "hertz",
    6: "dB/seconds",
    7: "cm/sec",
    8: "cm2",
    9: "cm2/sec",
    10: "cm3",
    11: "cm3/sec",
    12: "degrees",
}
UNITS_CM = 3
SPATIAL_FORMAT_2D = 1  # Region Spatial Format (0018,6012): 1 = 2D (tissue or flow)

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UltrasoundRegion(_Model):
    """One item of the Sequence of Ultrasound Regions; box corners are inclusive pixel indices."""

    index: int
    spatial_format: int
    data_type: int
    data_type_name: str
    x0: int
    y0: int
    x1: int
    y1: int
    units_x: str
    units_y: str
    physical_delta_x: float | None = None
    physical_delta_y: float | None = None
    fits_image: bool = Field(description="the box lies inside the pixel matrix")

    @property
    def is_tissue(self) -> bool:
        return self.data_type == RegionDataType.tissue

    @property
    def is_color_flow(self) -> bool:
        return self.data_type == RegionDataType.color_flow

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Half-open box (x0, y0, x1, y1) for numpy slicing."""
        return (self.x0, self.y0, self.x1 + 1, self.y1 + 1)

    def mm_per_px(self) -> tuple[float, float] | None:
        """Pixel size in mm when both axes are spatial (cm) with a positive delta, else None."""
        if self.units_x != "cm" or self.units_y != "cm":
            return None
        if not self.physical_delta_x or not self.physical_delta_y:
            return None
        if self.physical_delta_x <= 0 or self.physical_delta_y <= 0:
            return None
        return (abs(self.physical_delta_x) * 10.0, abs(self.physical_delta_y) * 10.0)


class Calibration(_Model):
    """Physical size of one pixel (mm) and where it came from."""

    mm_per_px_x: float = Field(gt=0)
    mm_per_px_y: float = Field(gt=0)
    source: Literal["ultrasound_region", "pixel_spacing", "user"]
    region_index: int | None = None


class PatientIdentity(_Model):
    """Identity fields compared when a study is filed under a patient; None means 'not given'."""

    name: str | None = None
    id: str | None = None
    birth_date: str | None = Field(default=None, description="DICOM DA, YYYYMMDD")


class StudyMetadata(_Model):
    """Everything the store needs about one DICOM instance (no pixel data)."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None
    series_instance_uid: str | None
    modality: str | None
    study_date: str | None = None
    acquired_at: str | None = Field(
        default=None,
        description="ISO 8601: acquisition, else content, else study date/time; offset when known",
    )
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    photometric_interpretation: str | None
    transfer_syntax_uid: str | None
    frame_time_ms: float | None = None
    patient: PatientIdentity
    regions: list[UltrasoundRegion] = Field(default_factory=list)
    calibration: Calibration | None = None
    burned_in_annotation: str | None = Field(default=None, description="(0028,0301) YES/NO, None if absent")
    warnings: list[str] = Field(default_factory=list)

    def require_calibration(self) -> Calibration:
        return require_calibration(self.calibration, self.warnings)


def require_calibration(calibration: Calibration | None, warnings: Sequence[str] = ()) -> Calibration:
    """Return the calibration or raise `CalibrationMissing` with the reason."""
    if calibration is None:
        why = (
            "; ".join(warnings)
            if warnings
            else "no Sequence of Ultrasound Regions with a spatial calibration"
        )
        raise CalibrationMissing(f"this measurement needs a physical calibration (mm per pixel): {why}")
    return calibration


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _regions(ds: Dataset, rows: int, columns: int) -> list[UltrasoundRegion]:
    out: list[UltrasoundRegion] = []
    for index, item in enumerate(ds.get("SequenceOfUltrasoundRegions", []) or []):
        data_type = int(item.get("RegionDataType", 0))
        try:
            name = RegionDataType(data_type).name
        except ValueError:
            name = f"code_{data_type}"
        x0, y0 = int(item.get("RegionLocationMinX0", 0)), int(item.get("RegionLocationMinY0", 0))
        x1, y1 = int(item.get("RegionLocationMaxX1", 0)), int(item.get("RegionLocationMaxY1", 0))
        dx, dy = item.get("PhysicalDeltaX"), item.get("PhysicalDeltaY")
        out.append(
            UltrasoundRegion(
                index=index,
                spatial_format=int(item.get("RegionSpatialFormat", 0)),
                data_type=data_type,
                data_type_name=name,
                x0=x0,
                y0=y0,
                x1=x1,
                y1=y1,
                units_x=PHYSICAL_UNITS.get(int(item.get("PhysicalUnitsXDirection", 0)), "unknown"),
                units_y=PHYSICAL_UNITS.get(int(item.get("PhysicalUnitsYDirection", 0)), "unknown"),
                physical_delta_x=float(dx) if dx is not None else None,
                physical_delta_y=float(dy) if dy is not None else None,
                fits_image=0 <= x0 <= x1 < columns and 0 <= y0 <= y1 < rows,
            )
        )
    return out


def _calibration(ds: Dataset, regions: list[UltrasoundRegion], warnings: list[str]) -> Calibration | None:
    spatial = [r for r in regions if r.spatial_format == SPATIAL_FORMAT_2D and r.mm_per_px() is not None]
    # Prefer tissue, then colour flow: both share the B-mode geometry on a scanner's export.
    spatial.sort(key=lambda r: (0 if r.is_tissue else 1 if r.is_color_flow else 2, r.index))
    for region in spatial:
        if not region.fits_image:
            warnings.append(
                f"ultrasound region {region.index} ({region.data_type_name}) lies outside the "
                f"{ds.Columns}x{ds.Rows} pixel matrix: the image was resized or cropped after export, "
                "so its calibration is not used"
            )
            continue
        scale = region.mm_per_px()
        assert scale is not None
        return Calibration(
            mm_per_px_x=scale[0], mm_per_px_y=scale[1], source="ultrasound_region", region_index=region.index
        )
    spacing = ds.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2 and float(spacing[0]) > 0 and float(spacing[1]) > 0:
        # PixelSpacing is (row spacing, column spacing) in mm, PS3.3 10.7.1.3.
        return Calibration(
            mm_per_px_x=float(spacing[1]), mm_per_px_y=float(spacing[0]), source="pixel_spacing"
        )
    if not spatial:
        warnings.append("no Sequence of Ultrasound Regions with a spatial (cm) calibration")
    return None


def _acquired_at(ds: Dataset) -> str | None:
    """Acquisition (else content, else study) date and time as ISO 8601, with the UTC offset from
    TimezoneOffsetFromUTC when given. Malformed values give None rather than an error."""
    offset = _str(ds.get("TimezoneOffsetFromUTC")) or ""
    candidates: list[str] = []
    dt = _str(ds.get("AcquisitionDateTime"))
    if dt:
        candidates.append(dt if any(c in dt[8:] for c in "+-") else dt + offset)
    for date_kw, time_kw in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
        ("StudyDate", "StudyTime"),
    ):
        d = _str(ds.get(date_kw))
        if d:
            candidates.append(d + (_str(ds.get(time_kw)) or "") + offset)
    for text in candidates:
        try:
            value = DT(text)
        except ValueError:
            continue
        return value.isoformat()
    return None


def metadata_from_dataset(ds: Dataset) -> StudyMetadata:
    """Build `StudyMetadata` from a dataset already read (pixel data not needed)."""
    if "Rows" not in ds or "Columns" not in ds:
        raise UnsupportedImageError("the DICOM file has no image (Rows/Columns missing)")
    rows, columns = int(ds.Rows), int(ds.Columns)
    warnings: list[str] = []
    regions = _regions(ds, rows, columns)
    calibration = _calibration(ds, regions, warnings)
    frame_time = ds.get("FrameTime")
    meta = getattr(ds, "file_meta", None)
    return StudyMetadata(
        sop_class_uid=_str(ds.get("SOPClassUID")),
        sop_instance_uid=_str(ds.get("SOPInstanceUID")),
        study_instance_uid=_str(ds.get("StudyInstanceUID")),
        series_instance_uid=_str(ds.get("SeriesInstanceUID")),
        modality=_str(ds.get("Modality")),
        study_date=_str(ds.get("StudyDate")),
        acquired_at=_acquired_at(ds),
        rows=rows,
        columns=columns,
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
        photometric_interpretation=_str(ds.get("PhotometricInterpretation")),
        transfer_syntax_uid=_str(meta.get("TransferSyntaxUID")) if meta is not None else None,
        frame_time_ms=float(frame_time) if frame_time not in (None, "") else None,
        patient=PatientIdentity(
            name=_str(ds.get("PatientName")),
            id=_str(ds.get("PatientID")),
            birth_date=_str(ds.get("PatientBirthDate")),
        ),
        regions=regions,
        calibration=calibration,
        burned_in_annotation=_str(ds.get("BurnedInAnnotation")),
        warnings=warnings,
    )


def read_dataset(path: str | os.PathLike[str], *, pixels: bool = True) -> Dataset:
    """Read a DICOM file, raising `NotDicomError` (not a pydicom traceback) when it is not one."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise NotDicomError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise NotDicomError(f"is a directory, not a DICOM file: {path}") from None
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise NotDicomError(f"not a readable DICOM file: {path} ({exc})") from None


def read_study(path: str | os.PathLike[str]) -> StudyMetadata:
    """Read the metadata of one DICOM file (header only, pixel data is not decoded)."""
    return metadata_from_dataset(read_dataset(path, pixels=False))


def _to_uint8(array: np.ndarray, bits_stored: int) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array, 0, 255).astype(np.uint8)
    shift = max(int(bits_stored) - 8, 0)
    return np.clip(array.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def frame_rgb(ds: Dataset, index: int = 0) -> np.ndarray:
    """One frame as an (H, W, 3) uint8 RGB array.

    YBR (including JPEG baseline through the pixel-data plugins) is converted to RGB by pydicom,
    palette colour goes through `apply_color_lut`, and monochrome is replicated to three channels
    (MONOCHROME1 inverted) so that every later step sees the same layout.
    """
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= index < frames:
        raise ImagingError(f"frame {index} out of range: the image has {frames} frame(s) (0..{frames - 1})")
    if "PixelData" not in ds:
        raise UnsupportedImageError("the DICOM file has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    try:
        array = pixel_array(ds, index=index if frames > 1 else None)
    except Exception as exc:  # pixel plugins raise many types; the user needs one clear message
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID", "no transfer syntax") if meta is not None else "no file meta"
        raise UnsupportedImageError(f"cannot decode the pixel data ({syntax}): {exc}") from None
    bits = int(ds.get("BitsStored", 8))
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(array, ds)
        # LUT entries are 8 or 16 bit; scale by the LUT's own depth.
        lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _to_uint8(rgb, lut_bits)
    if array.ndim == 2:
        gray = _to_uint8(array, bits)
        if photometric == "MONOCHROME1":
            gray = 255 - gray
        return np.repeat(gray[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 3:
        return _to_uint8(array, bits)
    raise UnsupportedImageError(f"unsupported pixel layout {array.shape} ({photometric})")


def iter_frames_rgb(ds: Dataset) -> list[np.ndarray]:
    """All frames as RGB arrays (decoded once)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return [frame_rgb(ds, i) for i in range(frames)]


# --- patient identity -------------------------------------------------------------------------


def _norm_name(name: str) -> str:
    """Normalise a DICOM PN for comparison: case, accents, separators and empty trailing components.

    'Doe^Jane^^^' and 'DOE^JANE' are the same person; 'Doe^Jane' and 'Doe^Joan' are not.
    """
    text = unicodedata.normalize("NFKD", name)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).upper()
    text = text.split("=")[0]  # alphabetic representation only
    parts = [" ".join(p.split()) for p in text.split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def _norm_date(value: str) -> str:
    return value.replace("-", "").replace(".", "").strip()


def check_identity(
    metadata: StudyMetadata, expected: PatientIdentity, *, allow_missing: bool = False
) -> None:
    """Refuse a study whose header identity differs from the patient it is filed under.

    Every field given in `expected` is compared; a field absent from the header is a mismatch too
    unless `allow_missing` (a header without identity cannot prove it belongs to the patient).
    Raises `IdentityMismatch` listing every reason; returns None when the identity matches.
    """
    header = metadata.patient
    reasons: list[str] = []
    checks: list[tuple[str, str | None, str | None, Any]] = [
        ("patient name", expected.name, header.name, _norm_name),
        ("patient id", expected.id, header.id, lambda s: s.strip()),
        ("birth date", expected.birth_date, header.birth_date, _norm_date),
    ]
    for label, want, have, norm in checks:
        if want is None:
            continue
        if have is None:
            if not allow_missing:
                reasons.append(f"{label} missing in the DICOM header (expected {want!r})")
            continue
        if norm(want) != norm(have):
            reasons.append(f"{label} differs: DICOM header has {have!r}, patient record has {want!r}")
    if reasons:
        raise IdentityMismatch(reasons)


# --- content-addressed storage ----------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def store_dicom(src_path: str | os.PathLike[str], root_dir: str | os.PathLike[str]) -> str:
    """Copy a DICOM file into `root_dir` under its SHA-256 and return the path relative to the root.

    The layout is `dicom/<2 hex>/<2 hex>/<sha256>.dcm`. Storing the same bytes twice returns the same
    path and writes nothing; the copy is written to a temporary file and renamed, so a reader never
    sees a half-written file. The file is checked to be DICOM first (`NotDicomError`).
    """
    return _store_dicom(src_path, root_dir)[0]


def _store_dicom(src_path: str | os.PathLike[str], root_dir: str | os.PathLike[str]) -> tuple[str, bool]:
    """`store_dicom`, and whether this call wrote the file (False: the same bytes were already stored)."""
    read_dataset(src_path, pixels=False)
    digest = sha256_file(src_path)
    relative = Path("dicom") / digest[:2] / digest[2:4] / f"{digest}.dcm"
    target = Path(root_dir) / relative
    if target.exists() and sha256_file(target) == digest:
        return relative.as_posix(), False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".dcm")
    os.close(fd)
    try:
        shutil.copyfile(src_path, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return relative.as_posix(), True


class IngestedStudy(_Model):
    """What the store keeps for one imported file: its metadata and where its bytes went."""

    metadata: StudyMetadata
    stored_path: str = Field(description="relative to the image store root")
    sha256: str
    newly_stored: bool = Field(default=False, description="this import wrote the file (it was not stored before)")
    size_bytes: int

    def reference(
        self, frame: int | None = None, point_px: tuple[float, float] | None = None
    ) -> ImageReference:
        """An `ImageReference` to this file (for measurements, vessels and findings)."""
        return ImageReference(
            study_instance_uid=self.metadata.study_instance_uid,
            series_instance_uid=self.metadata.series_instance_uid,
            sop_instance_uid=self.metadata.sop_instance_uid,
            frame=frame,
            stored_path=self.stored_path,
            point_px=point_px,
        )


def ingest_dicom(
    path: str | os.PathLike[str],
    root_dir: str | os.PathLike[str],
    expected: PatientIdentity | None = None,
    *,
    allow_missing: bool = False,
    metadata: StudyMetadata | None = None,
) -> IngestedStudy:
    """Read, check identity (before anything is stored) and store one DICOM file. `metadata`: the file's
    `read_study`, when the caller has already read it (the file is then not parsed a second time).

    Raises `NotDicomError`, `IdentityMismatch` (nothing stored) or `UnsupportedImageError`.
    """
    if metadata is None:
        metadata = read_study(path)
    if expected is not None:
        check_identity(metadata, expected, allow_missing=allow_missing)
    relative, written = _store_dicom(path, root_dir)
    return IngestedStudy(
        metadata=metadata,
        stored_path=relative,
        sha256=Path(relative).stem,
        size_bytes=os.path.getsize(path),
        newly_stored=written,
    )
