"""De-identification of DICOM for research export: PS3.15 Basic Application Level Confidentiality
Profile (`imaging.dicom-ps3-15-annex-e`).

The attribute table and most actions (D dummy, Z empty, X/Z, X/D, ...) come from the
`dicom-anonymizer` package (`imaging.dicom-anonymizer`, table `dicomfields_2026c`), so the list
follows the standard rather than a hand-copied subset. Two actions are replaced here:

- U (and UIDs under X/Z/U*): new UIDs from a keyed hash of the old one (`UidMapper`), so the same
  study keeps one new StudyInstanceUID across all its files and across export runs that share the
  secret, while the old UID cannot be recovered without it. The package's own mapper draws random
  UIDs kept in a process-global dictionary.
- X: the attribute is removed (the package keeps dates with a dummy value instead).

Private attributes are removed. Burned-in text is *pixel* data the profile cannot clean: the report
says whether the header declares it (Burned In Annotation, absent means unknown), and pixels can be
blanked outside the ultrasound regions (where scanners write names and dates) or in given boxes.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from regenguide.imaging.dicom_io import frame_rgb, metadata_from_dataset, read_dataset

PROFILE_TABLE = "dicomfields_2026c"
DEID_UID_PREFIX = "1.2.826.0.1.3680043.8.498."
METHOD = "DICOM PS3.15 Basic Application Confidentiality Profile"

Box = tuple[int, int, int, int]


def profile_tags() -> dict[str, list[tuple[int, ...]]]:
    """The PS3.15 Table E.1-1 tags by action code (from dicom-anonymizer)."""
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    return dicom_anonymization_database_selector(PROFILE_TABLE)


class UidMapper:
    """Consistent UID replacement: `new = H(secret, old)` under a fixed root.

    One mapper (or one secret) per export keeps references between files intact; a random secret
    is drawn when none is given, so mappings are consistent within that mapper only.
    """

    def __init__(self, secret: str | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_hex(32)
        self._cache: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        uid = str(uid).strip()
        if not uid:
            return uid
        if uid not in self._cache:
            self._cache[uid] = str(generate_uid(DEID_UID_PREFIX, [self._secret, uid]))
        return self._cache[uid]

    def __len__(self) -> int:
        return len(self._cache)


class DeidReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = "DICOM PS3.15 Basic Application Level Confidentiality Profile (DCM 113100)"
    table: str = PROFILE_TABLE
    removed: list[str] = Field(default_factory=list, description="keywords of removed top-level attributes")
    changed: list[str] = Field(
        default_factory=list, description="keywords emptied, replaced or given new UIDs"
    )
    uids_mapped: int = 0
    private_removed: int = 0
    burned_in_annotation: str | None = Field(description="header value before export; None = not declared")
    burned_in_risk: bool = Field(
        description="text may be burned into the pixels (declared YES or not declared)"
    )
    masked_boxes: list[Box] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


def _uid_action(mapper: UidMapper) -> Callable[[Dataset, tuple[int, int]], None]:
    def action(dataset: Dataset, tag: tuple[int, int]) -> None:
        element = dataset.get(tag)
        if element is None:
            return
        if element.VR == "UI":
            if isinstance(element.value, MultiValue | list):
                element.value = [mapper(v) for v in element.value]
            elif element.value:
                element.value = mapper(element.value)
        elif element.VR == "SQ":
            _map_uids_in(element.value, mapper)

    return action


def _map_uids_in(seq: DicomSequence, mapper: UidMapper) -> None:
    """Replace instance UIDs inside a sequence (U* of X/Z/U*), keeping class UIDs."""
    for item in seq:
        for element in item:
            if element.VR == "SQ":
                _map_uids_in(element.value, mapper)
            elif element.VR == "UI" and element.value and "ClassUID" not in (element.keyword or ""):
                if isinstance(element.value, MultiValue | list):
                    element.value = [mapper(v) for v in element.value]
                else:
                    element.value = mapper(element.value)


def _delete(dataset: Dataset, tag: tuple[int, int]) -> None:
    if tag in dataset:
        del dataset[tag]


def _snapshot(ds: Dataset) -> dict[int, tuple[str, str]]:
    return {int(e.tag): (e.keyword or str(e.tag), repr(e.value)) for e in ds if e.tag != 0x7FE00010}


def deidentify(
    ds: Dataset,
    *,
    uid_mapper: UidMapper | None = None,
    pseudonym: str | None = None,
    mask_outside_regions: bool = False,
    mask_boxes: Sequence[Box] = (),
) -> DeidReport:
    """De-identify `ds` in place and report what changed.

    `pseudonym` (a study code, never a real identifier) is written to PatientName and PatientID,
    which the profile empties. `mask_outside_regions` blanks every pixel outside the Sequence of
    Ultrasound Regions; `mask_boxes` blanks given half-open boxes (x0, y0, x1, y1). Masking
    decodes the pixels and stores them uncompressed RGB.
    """
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions

    mapper = uid_mapper if uid_mapper is not None else UidMapper()
    before_uids = len(mapper)
    meta = metadata_from_dataset(ds)
    burned = meta.burned_in_annotation
    report = DeidReport(burned_in_annotation=burned, burned_in_risk=(burned or "").upper() != "NO")
    masks = _mask_boxes(ds, meta, mask_outside_regions, mask_boxes, report)
    before = _snapshot(ds)
    private_before = sum(1 for e in ds if e.tag.is_private)
    tags = profile_tags()
    uid_action = _uid_action(mapper)
    rules: dict[tuple[int, ...], Callable[[Dataset, tuple[int, int]], None]] = {}
    for tag in tags["X_TAGS"]:
        if len(tag) == 2:
            rules[tag] = _delete
    for tag in list(tags["U_TAGS"]) + list(tags["X_Z_U_STAR_TAGS"]):
        if len(tag) == 2:
            rules[tag] = uid_action

    def base_rules() -> dict[tuple[int, ...], Callable[[Dataset, tuple[int, int]], None]]:
        return initialize_actions(PROFILE_TABLE)

    # The package reports some problems with print(); keep stdout clean (the CLI prints JSON there)
    # and pass the messages on as warnings.
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        anonymize_dataset(
            ds, extra_anonymization_rules=rules, delete_private_tags=True, base_rules_gen=base_rules
        )
    report.warnings.extend(line.strip() for line in captured.getvalue().splitlines() if line.strip())
    if masks:
        _apply_masks(ds, masks)
    if "SOPInstanceUID" in ds and getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if pseudonym is not None:
        ds.PatientName = pseudonym
        ds.PatientID = pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]
    after = _snapshot(ds)
    report.removed = sorted(before[t][0] for t in before if t not in after)
    report.changed = sorted(before[t][0] for t in before if t in after and after[t][1] != before[t][1])
    report.uids_mapped = len(mapper) - before_uids
    report.private_removed = private_before
    if report.burned_in_risk and not masks:
        report.warnings.append(
            "Burned In Annotation is "
            + ("YES" if burned else "not declared")
            + ": names or dates may be written in the pixels; review the image or mask it before export"
        )
    return report


def _mask_boxes(
    ds: Dataset, meta: object, outside_regions: bool, boxes: Sequence[Box], report: DeidReport
) -> list[Box]:
    from regenguide.imaging.dicom_io import StudyMetadata

    assert isinstance(meta, StudyMetadata)
    out = [tuple(int(v) for v in b) for b in boxes]
    if outside_regions:
        regions = [r for r in meta.regions if r.fits_image]
        if not regions:
            report.warnings.append(
                "no ultrasound region fits the image: pixels outside regions were not masked"
            )
        else:
            keep = np.zeros((meta.rows, meta.columns), bool)
            for r in regions:
                x0, y0, x1, y1 = r.box
                keep[y0:y1, x0:x1] = True
            # Outside = everything not kept; expressed as row bands of boxes for the report.
            for y in range(meta.rows):
                cols = np.flatnonzero(~keep[y])
                if cols.size == 0:
                    continue
                runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
                out.extend((int(run[0]), y, int(run[-1]) + 1, y + 1) for run in runs)
    merged = _merge_rows(out)
    report.masked_boxes = merged
    return merged


def _merge_rows(boxes: list[tuple[int, ...]]) -> list[Box]:
    """Merge vertically adjacent boxes with the same x-extent (keeps the report short)."""
    result: list[list[int]] = []
    for b in sorted(boxes, key=lambda b: (b[0], b[2], b[1])):
        if result and result[-1][0] == b[0] and result[-1][2] == b[2] and result[-1][3] >= b[1]:
            result[-1][3] = max(result[-1][3], b[3])
        else:
            result.append(list(b))
    return [(r[0], r[1], r[2], r[3]) for r in result]


def _apply_masks(ds: Dataset, boxes: Sequence[Box]) -> None:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    data = np.stack([frame_rgb(ds, i) for i in range(frames)])
    for x0, y0, x1, y1 in boxes:
        data[:, y0:y1, x0:x1] = 0
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in [k for k in ds.dir() if "PaletteColorLookupTable" in k or k == "PixelPaddingValue"]:
        delattr(ds, keyword)
    ds.PhotometricInterpretation = "RGB"
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = data.tobytes()
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = False
    if "LossyImageCompression" in ds:
        ds.LossyImageCompression = ds.LossyImageCompression  # history kept as is


def deidentify_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    uid_mapper: UidMapper | None = None,
    pseudonym: str | None = None,
    mask_outside_regions: bool = False,
    mask_boxes: Sequence[Box] = (),
) -> DeidReport:
    ds = read_dataset(src)
    report = deidentify(
        ds,
        uid_mapper=uid_mapper,
        pseudonym=pseudonym,
        mask_outside_regions=mask_outside_regions,
        mask_boxes=mask_boxes,
    )
    ds.save_as(dst, enforce_file_format=True)
    return report
