"""Ultrasound guidance: DICOM ingestion and calibration, colour-Doppler vessel extraction,
synthetic phantoms, calibrated measurements, vascular maps and their plan-check rules.

Clinical logic here is pure functions on arrays and pydantic models: no database, API or CLI.
The names below are imported on first use (PEP 562), so that importing a light submodule (or the
CLI's help) does not load pydicom and scipy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    "Calibration": "dicom_io",
    "CalibrationMissing": "dicom_io",
    "IdentityMismatch": "dicom_io",
    "ImagingError": "dicom_io",
    "IngestedStudy": "dicom_io",
    "NotDicomError": "dicom_io",
    "PatientIdentity": "dicom_io",
    "StudyMetadata": "dicom_io",
    "UltrasoundRegion": "dicom_io",
    "check_identity": "dicom_io",
    "frame_rgb": "dicom_io",
    "ingest_dicom": "dicom_io",
    "metadata_from_dataset": "dicom_io",
    "read_dataset": "dicom_io",
    "read_study": "dicom_io",
    "store_dicom": "dicom_io",
    "FlowResult": "doppler",
    "VesselSection": "doppler",
    "analyse_frame": "doppler",
    "extract_flow": "doppler",
    "DopplerMode": "enums",
    "FlowDirection": "enums",
    "Observation": "measure",
    "ImageReference": "refs",
    "MappedVessel": "vascular",
    "VascularMap": "vascular",
    "vascular_findings": "vascular",
    "vascular_map_from_flow": "vascular",
    "vascular_map_from_tracks": "vascular",
    "track_vessels": "cine",
    "deidentify": "deid",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'regenguide.imaging' has no attribute {name!r}")
    value = getattr(import_module(f"regenguide.imaging.{module}"), name)
    globals()[name] = value
    return value
