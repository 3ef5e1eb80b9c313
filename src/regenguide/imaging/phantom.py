"""Synthetic, calibrated ultrasound DICOM phantoms of skin layers with colour-Doppler vessels.

Why a statistical model and not a physics simulator: `pymust` (SIMUS) simulates B-mode and Doppler
from first principles, but one plane wave over 20,000 scatterers took 164 s on this project's
machine (pymust 0.1.9, L11-5v), far too slow for tests that generate many phantoms. The model
here is the classic fully-developed speckle model (`imaging.wagner-1983-speckle`): each pixel
holds a circular complex Gaussian scatterer sum whose power is the layer's echogenicity; the field
is convolved with a Gaussian point-spread function (axial/lateral resolution), its envelope is
Rayleigh distributed (point SNR = 1.91), and the envelope is log-compressed to 8 bits over a fixed
dynamic range as a scanner does.

Colour flow is drawn in the colour-flow region: a laminar (parabolic) velocity profile across each
vessel, coloured red→yellow for flow towards the transducer and blue→cyan away (the default
colour map, `imaging.colour-doppler-bart`), with a wall filter that blanks the slowest rim and random
colour drop-outs. A colour bar and a coloured marker are burned in *outside* the regions, as on a
scanner screen, so that extraction must ignore them.

The layer thicknesses and echo levels are illustrative phantom geometry, **not** anatomical
reference values: the phantom tests measurement code against a known truth, nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pydicom
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from regenguide.imaging.dicom_io import US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE
from regenguide.imaging.doppler import FlowDirection, FlowResult

PHANTOM_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root, for synthetic objects


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Layer(_Model):
    name: str
    thickness_mm: float = Field(gt=0)
    echo: float = Field(ge=0, description="relative scatter amplitude")


def _default_layers() -> list[Layer]:
    # Illustrative geometry for a phantom, not anatomical reference values.
    return [
        Layer(name="gel", thickness_mm=0.6, echo=0.02),
        Layer(name="epidermis", thickness_mm=0.15, echo=1.2),
        Layer(name="dermis", thickness_mm=1.6, echo=0.7),
        Layer(name="subcutis", thickness_mm=6.0, echo=0.12),
        Layer(name="fascia", thickness_mm=0.4, echo=1.0),
        Layer(name="muscle", thickness_mm=7.0, echo=0.3),
        Layer(name="bone", thickness_mm=0.5, echo=2.0),
    ]


class VesselSpec(_Model):
    x_mm: float = Field(description="lateral position from the left edge of the tissue region")
    depth_mm: float = Field(gt=0, description="centre depth below the skin surface")
    diameter_mm: float = Field(gt=0)
    direction: Literal["towards", "away"] = "towards"


class PhantomSpec(_Model):
    """Geometry of a phantom; pixel size is isotropic."""

    width_px: int = Field(default=640, ge=64, le=4096)
    height_px: int = Field(default=480, ge=64, le=4096)
    mm_per_px: float = Field(default=0.05, gt=0, le=1)
    tissue_box: tuple[int, int, int, int] = (40, 40, 600, 470)  # half-open x0, y0, x1, y1
    colour_box: tuple[int, int, int, int] = (80, 40, 560, 440)
    layers: list[Layer] = Field(default_factory=_default_layers)
    vessels: list[VesselSpec] | None = Field(default=None, description="None: random vessels from the seed")
    n_vessels: tuple[int, int] = (3, 6)
    vessel_diameter_mm: tuple[float, float] = (0.5, 3.0)
    dynamic_range_db: float = Field(default=50.0, gt=0)
    psf_sigma_px: tuple[float, float] = Field(default=(1.0, 2.0), description="(axial, lateral) Gaussian PSF")
    wall_filter: float = Field(
        default=0.05, ge=0, lt=1, description="share of peak velocity shown as no flow"
    )
    colour_dropout: float = Field(default=0.02, ge=0, lt=1)
    frames: int = Field(default=1, ge=1, le=200)
    frame_time_ms: float = Field(default=33.333, gt=0)


class VesselTruth(_Model):
    centre_px: tuple[float, float]  # (x, y)
    depth_mm: float
    diameter_mm: float
    direction: Literal["towards", "away"]


class PhantomTruth(_Model):
    seed: int
    mm_per_px: float
    skin_line_px: float
    layer_tops_mm: dict[str, float] = Field(description="depth of each layer's top below the skin surface")
    vessels: list[VesselTruth]
    tissue_box: tuple[int, int, int, int]
    colour_box: tuple[int, int, int, int]
    colour_bar_box: tuple[int, int, int, int]


class Phantom(_Model):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    frames: list[np.ndarray]
    truth: PhantomTruth
    spec: PhantomSpec


# --- geometry -----------------------------------------------------------------------------------


def _skin_row(spec: PhantomSpec) -> float:
    gel = sum(layer.thickness_mm for layer in spec.layers[:1] if layer.name == "gel")
    return spec.tissue_box[1] + gel / spec.mm_per_px


def _layer_tops(spec: PhantomSpec) -> dict[str, float]:
    tops: dict[str, float] = {}
    depth = 0.0
    for layer in spec.layers:
        if layer.name == "gel":
            continue
        tops[layer.name] = depth
        depth += layer.thickness_mm
    return tops


def _random_vessels(spec: PhantomSpec, rng: np.random.Generator) -> list[VesselSpec]:
    tops = _layer_tops(spec)
    lo_depth = tops.get("subcutis", 2.0) - 0.3
    hi_depth = tops.get("bone", 12.0) - 1.5
    x0, _, x1, _ = spec.colour_box
    tx0 = spec.tissue_box[0]
    n = int(rng.integers(spec.n_vessels[0], spec.n_vessels[1] + 1))
    vessels: list[VesselSpec] = []
    attempts = 0
    while len(vessels) < n and attempts < 500:
        attempts += 1
        d = float(rng.uniform(*spec.vessel_diameter_mm))
        depth = float(rng.uniform(max(lo_depth, d / 2 + 0.5), hi_depth))
        margin_px = d / spec.mm_per_px
        x_px = float(rng.uniform(x0 + margin_px + 4, x1 - margin_px - 4))
        x_mm = (x_px - tx0) * spec.mm_per_px
        if any(np.hypot(x_mm - v.x_mm, depth - v.depth_mm) < (d + v.diameter_mm) / 2 + 1.0 for v in vessels):
            continue
        vessels.append(
            VesselSpec(
                x_mm=x_mm,
                depth_mm=depth,
                diameter_mm=d,
                direction="towards" if rng.random() < 0.5 else "away",
            )
        )
    return vessels


# --- image synthesis ----------------------------------------------------------------------------


def rayleigh_envelope(
    echo: np.ndarray, psf_sigma_px: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Envelope of a speckle field: PSF * (echo · circular complex Gaussian scatterers).

    Normalised so that in a uniform region E[envelope²] = echo², i.e. the envelope there is
    Rayleigh distributed with mean echo·sqrt(pi)/2 (`imaging.wagner-1983-speckle`).
    """
    shape = echo.shape
    re = rng.standard_normal(shape) * echo
    im = rng.standard_normal(shape) * echo
    re = ndimage.gaussian_filter(re, psf_sigma_px, mode="reflect")
    im = ndimage.gaussian_filter(im, psf_sigma_px, mode="reflect")
    # Variance of white noise through a normalised Gaussian kernel: sum of squared kernel weights.
    impulse = np.zeros((41, 41))
    impulse[20, 20] = 1.0
    gain = float(np.sqrt(np.sum(ndimage.gaussian_filter(impulse, psf_sigma_px) ** 2)))
    # Each quadrature has variance 1/2 after scaling, so |z|² has mean echo².
    return np.hypot(re, im) / (gain * np.sqrt(2.0))


def log_compress(envelope: np.ndarray, dynamic_range_db: float, reference: float) -> np.ndarray:
    """8-bit display: 0 dB at `reference` maps to 255, -dynamic_range_db and below to 0."""
    db = 20.0 * np.log10(np.maximum(envelope, 1e-12) / reference)
    return np.clip(np.rint(255.0 * (1.0 + db / dynamic_range_db)), 0, 255).astype(np.uint8)


def _echo_map(spec: PhantomSpec, vessels: Sequence[VesselSpec], rng: np.random.Generator) -> np.ndarray:
    h, w = spec.height_px, spec.width_px
    x0, y0, x1, y1 = spec.tissue_box
    echo = np.zeros((h, w))
    rows = np.arange(y0, y1)
    depth_from_top_mm = (rows - y0 + 0.5) * spec.mm_per_px
    column = np.full(rows.shape, spec.layers[-1].echo * 0.02)  # acoustic shadow under the bone
    edge = 0.0
    for layer in spec.layers:
        inside = (depth_from_top_mm >= edge) & (depth_from_top_mm < edge + layer.thickness_mm)
        column[inside] = layer.echo
        edge += layer.thickness_mm
    echo[y0:y1, x0:x1] = column[:, None]
    # Faint oblique fibrous septa in the subcutis (below the dermis threshold of the measurements).
    tops = _layer_tops(spec)
    skin = _skin_row(spec)
    if "subcutis" in tops:
        sub_top = skin + tops["subcutis"] / spec.mm_per_px
        sub_bottom = (
            sub_top + next(la.thickness_mm for la in spec.layers if la.name == "subcutis") / spec.mm_per_px
        )
        yy, xx = np.mgrid[y0:y1, x0:x1]
        for _ in range(3):
            slope = rng.uniform(-0.15, 0.15)
            offset = rng.uniform(sub_top + 10, sub_bottom - 10)
            line = np.abs(yy - (offset + slope * (xx - x0))) < 1.0
            band = (yy > sub_top + 4) & (yy < sub_bottom - 4)
            echo[y0:y1, x0:x1][line & band] = 0.3
    # Vessel lumens are anechoic.
    yy, xx = np.mgrid[0:h, 0:w]
    for v in vessels:
        cx = x0 + v.x_mm / spec.mm_per_px
        cy = skin + v.depth_mm / spec.mm_per_px
        r = v.diameter_mm / 2 / spec.mm_per_px
        echo[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 0.02
    return echo


def _colour_for(v: np.ndarray, direction: str) -> np.ndarray:
    """Colour map: towards red (v→0) to yellow (v→1); away blue to cyan (default map)."""
    out = np.zeros(v.shape + (3,), dtype=np.float64)
    if direction == "towards":
        out[..., 0] = 140 + 115 * v
        out[..., 1] = 230 * v
    else:
        out[..., 2] = 140 + 115 * v
        out[..., 1] = 230 * v
    return out


def _draw_overlays(image: np.ndarray, spec: PhantomSpec, seed: int) -> tuple[int, int, int, int]:
    h, w = image.shape[:2]
    bar_w = 12
    bx0 = min(w - bar_w - 4, spec.tissue_box[2] + 8)
    by0 = min(spec.colour_box[1] + 40, h // 4)
    bar_h = min(128, h - by0 - 4) // 2 * 2  # fits small phantoms too
    if bar_h >= 8:
        ramp = np.linspace(1.0, 0.0, bar_h // 2)
        bar = np.concatenate([_colour_for(ramp, "towards"), _colour_for(ramp[::-1], "away")])
        image[by0 : by0 + bar_h, bx0 : bx0 + bar_w] = np.clip(bar[:, None, :], 0, 255).astype(np.uint8)
    else:
        bar_h = 0
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    draw.text((8, 6), f"RegenGuide phantom  seed {seed}", fill=(230, 230, 230))
    draw.ellipse((w - 30, 8, w - 22, 16), fill=(40, 200, 120))  # orientation marker, coloured
    image[:] = np.asarray(pil)
    return (bx0, by0, bx0 + bar_w, by0 + bar_h)


def make_phantom(seed: int = 0, spec: PhantomSpec | None = None) -> Phantom:
    """Generate the frames (RGB uint8) and the ground truth of a phantom."""
    spec = spec or PhantomSpec()
    rng = np.random.default_rng(seed)
    vessels = spec.vessels if spec.vessels is not None else _random_vessels(spec, rng)
    echo = _echo_map(spec, vessels, rng)
    envelope = rayleigh_envelope(echo, spec.psf_sigma_px, rng)
    reference = 2.0 * max(layer.echo for layer in spec.layers)
    bmode = log_compress(envelope, spec.dynamic_range_db, reference)
    outside = np.ones(echo.shape, bool)
    tx0, ty0, tx1, ty1 = spec.tissue_box
    outside[ty0:ty1, tx0:tx1] = False
    bmode[outside] = 0
    skin = _skin_row(spec)
    h, w = spec.height_px, spec.width_px
    yy, xx = np.mgrid[0:h, 0:w]
    cx0, cy0, cx1, cy1 = spec.colour_box
    in_box = (xx >= cx0) & (xx < cx1) & (yy >= cy0) & (yy < cy1)
    frames: list[np.ndarray] = []
    bar_box = (0, 0, 0, 0)
    for f in range(spec.frames):
        # Pulsatile peak velocity over the cine (arbitrary units; only the colour changes).
        pulse = 0.75 + 0.25 * np.cos(2 * np.pi * f / max(spec.frames, 1))
        image = np.repeat(bmode[:, :, None], 3, axis=2)
        for v in vessels:
            cx = tx0 + v.x_mm / spec.mm_per_px
            cy = skin + v.depth_mm / spec.mm_per_px
            r = v.diameter_mm / 2 / spec.mm_per_px
            rr = ((xx - cx) ** 2 + (yy - cy) ** 2) / (r * r)
            vel = np.clip(1.0 - rr, 0.0, 1.0)  # laminar (Poiseuille) profile, 1 at the centre
            show = (rr <= 1.0) & (vel > spec.wall_filter) & in_box
            show &= rng.random(show.shape) >= spec.colour_dropout
            colour = _colour_for(np.clip(vel * pulse, 0, 1), v.direction)
            image[show] = np.clip(colour[show], 0, 255).astype(np.uint8)
        bar_box = _draw_overlays(image, spec, seed)
        frames.append(image)
    truth = PhantomTruth(
        seed=seed,
        mm_per_px=spec.mm_per_px,
        skin_line_px=skin,
        layer_tops_mm=_layer_tops(spec),
        vessels=[
            VesselTruth(
                centre_px=(tx0 + v.x_mm / spec.mm_per_px, skin + v.depth_mm / spec.mm_per_px),
                depth_mm=v.depth_mm,
                diameter_mm=v.diameter_mm,
                direction=v.direction,
            )
            for v in vessels
        ],
        tissue_box=spec.tissue_box,
        colour_box=spec.colour_box,
        colour_bar_box=bar_box,
    )
    return Phantom(frames=frames, truth=truth, spec=spec)


# --- DICOM --------------------------------------------------------------------------------------


def _region(box: tuple[int, int, int, int], data_type: int, mm_per_px: float, flags: int) -> Dataset:
    x0, y0, x1, y1 = box
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D
    item.RegionDataType = data_type  # 1 tissue, 2 colour flow (PS3.3 C.8.5.5.1.2)
    item.RegionFlags = flags
    item.RegionLocationMinX0 = x0
    item.RegionLocationMinY0 = y0
    item.RegionLocationMaxX1 = x1 - 1  # inclusive in DICOM
    item.RegionLocationMaxY1 = y1 - 1
    item.ReferencePixelX0 = 0
    item.ReferencePixelY0 = 0
    item.PhysicalUnitsXDirection = 3  # cm
    item.PhysicalUnitsYDirection = 3
    item.ReferencePixelPhysicalValueX = 0.0
    item.ReferencePixelPhysicalValueY = 0.0
    item.PhysicalDeltaX = mm_per_px / 10.0
    item.PhysicalDeltaY = mm_per_px / 10.0
    return item


def phantom_dataset(phantom: Phantom) -> Dataset:
    """A US (multi-frame when frames > 1) Image Storage dataset with Sequence of Ultrasound Regions."""
    spec, truth = phantom.spec, phantom.truth
    multi = len(phantom.frames) > 1
    sop_class = UID(US_MULTIFRAME_IMAGE_STORAGE if multi else US_IMAGE_STORAGE)
    seed_key = f"regenguide-phantom-{truth.seed}-{spec.model_dump_json()}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid(PHANTOM_UID_PREFIX, [seed_key, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(PHANTOM_UID_PREFIX, [seed_key, "study"])
    ds.SeriesInstanceUID = generate_uid(PHANTOM_UID_PREFIX, [seed_key, "series"])
    ds.Modality = "US"
    ds.PatientName = "PHANTOM^SKIN"
    ds.PatientID = f"PHANTOM-{truth.seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20260101"
    ds.StudyTime = "000000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "RegenGuide synthetic phantom"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "SYN"
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = spec.height_px
    ds.Columns = spec.width_px
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if multi:
        ds.NumberOfFrames = len(phantom.frames)
        ds.FrameTime = spec.frame_time_ms
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.SequenceOfUltrasoundRegions = [
        _region(spec.tissue_box, 1, spec.mm_per_px, 0),
        _region(spec.colour_box, 2, spec.mm_per_px, 0),
    ]
    ds.PixelData = np.stack(phantom.frames).tobytes()
    return ds


def write_phantom(
    path: str | os.PathLike[str], seed: int = 0, spec: PhantomSpec | None = None
) -> PhantomTruth:
    """Write a phantom DICOM file and return its truth."""
    phantom = make_phantom(seed, spec)
    phantom_dataset(phantom).save_as(path, enforce_file_format=True)
    return phantom.truth


# --- scoring ------------------------------------------------------------------------------------


class VesselMatch(_Model):
    truth: VesselTruth
    detected: bool
    depth_error_mm: float | None = None
    diameter_error_mm: float | None = None
    direction_ok: bool | None = None


class PhantomScore(_Model):
    matches: list[VesselMatch]
    false_positives: int
    detection_rate: float = Field(description="among vessels with diameter >= min_diameter_mm")
    max_abs_depth_error_mm: float | None
    mean_abs_depth_error_mm: float | None
    min_diameter_mm: float


def score_phantom(truth: PhantomTruth, result: FlowResult, min_diameter_mm: float = 1.0) -> PhantomScore:
    """Match detected vessels to the truth: a truth vessel is found when a detected centre lies
    within its radius (plus 2 pixels)."""
    used: set[int] = set()
    matches: list[VesselMatch] = []
    for t in truth.vessels:
        radius_px = t.diameter_mm / 2 / truth.mm_per_px + 2.0
        best: tuple[float, int] | None = None
        for i, v in enumerate(result.vessels):
            d = float(np.hypot(v.centroid_px[0] - t.centre_px[0], v.centroid_px[1] - t.centre_px[1]))
            if d <= radius_px and i not in used and (best is None or d < best[0]):
                best = (d, i)
        if best is None:
            matches.append(VesselMatch(truth=t, detected=False))
            continue
        used.add(best[1])
        v = result.vessels[best[1]]
        depth = v.depth_mm if v.depth_mm is not None else (v.depth_px or 0.0) * truth.mm_per_px
        diameter = v.diameter_mm if v.diameter_mm is not None else v.diameter_px * truth.mm_per_px
        matches.append(
            VesselMatch(
                truth=t,
                detected=True,
                depth_error_mm=depth - t.depth_mm,
                diameter_error_mm=diameter - t.diameter_mm,
                direction_ok=v.direction == FlowDirection(t.direction),
            )
        )
    eligible = [m for m in matches if m.truth.diameter_mm >= min_diameter_mm]
    errors = [abs(m.depth_error_mm) for m in matches if m.depth_error_mm is not None]
    return PhantomScore(
        matches=matches,
        false_positives=len(result.vessels) - len(used),
        detection_rate=(sum(m.detected for m in eligible) / len(eligible)) if eligible else 1.0,
        max_abs_depth_error_mm=max(errors) if errors else None,
        mean_abs_depth_error_mm=float(np.mean(errors)) if errors else None,
        min_diameter_mm=min_diameter_mm,
    )
