"""`regenguide imaging …`: ultrasound DICOM info, Doppler extraction, measurements, phantoms,
de-identification (thin CLI over `regenguide.imaging`)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError

from regenguide.domain.plan import PlanDocument, Side
from regenguide.imaging.enums import DopplerMode

if TYPE_CHECKING:
    from regenguide.imaging.dicom_io import Calibration, StudyMetadata
    from regenguide.imaging.doppler import FlowResult
    from regenguide.imaging.measure import Observation
    from regenguide.imaging.refs import ImageReference


@cache
def _im() -> SimpleNamespace:
    """The imaging stack, imported on first use so that `regenguide --help` and the other topics'
    commands do not pay for pydicom, scipy and Pillow."""
    from regenguide.imaging import cine, deid, dicom_io, doppler, measure, overlay, phantom, refs, vascular

    ns = SimpleNamespace()
    for module in (cine, deid, dicom_io, doppler, measure, overlay, phantom, refs, vascular):
        ns.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return ns


app = typer.Typer(
    help="Ultrasound guidance: DICOM info, colour-Doppler vessels, calibrated measurements, phantoms.",
    no_args_is_help=True,
)
measure_app = typer.Typer(
    help="Calibrated measurements (mm, mm2, mL) as observation records.", no_args_is_help=True
)
app.add_typer(measure_app, name="measure")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise _fail(f"{what} must be {count} comma-separated numbers, got {text!r}") from None
    if len(values) != count:
        raise _fail(f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


def _point(text: str, what: str = "point") -> tuple[float, float]:
    x, y = _numbers(text, 2, f"{what} (x,y in pixels)")
    return (x, y)


def _box(text: str) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in _numbers(text, 4, "box (x0,y0,x1,y1 in pixels)"))
    return (x0, y0, x1, y1)


def _load(path: Path, frame: int) -> tuple[Any, StudyMetadata, Any]:
    im = _im()
    ds = im.read_dataset(path)
    meta = im.metadata_from_dataset(ds)
    return ds, meta, im.frame_rgb(ds, frame)


def _calibration(meta: StudyMetadata, mm_per_px: float | None) -> Calibration | None:
    im = _im()
    if mm_per_px is not None:
        if mm_per_px <= 0:
            raise _fail("--mm-per-px must be positive")
        return im.Calibration(mm_per_px_x=mm_per_px, mm_per_px_y=mm_per_px, source="user")
    return meta.calibration


def _ref(meta: StudyMetadata, frame: int) -> ImageReference:
    im = _im()
    return im.ImageReference(
        study_instance_uid=meta.study_instance_uid,
        series_instance_uid=meta.series_instance_uid,
        sop_instance_uid=meta.sop_instance_uid,
        frame=frame,
    )


def _flow_json(result: Any) -> dict[str, object]:
    data = result.model_dump(mode="json")
    data["vessels"] = [
        {
            "centroid_px": v["centroid_px"],
            "depth_px": v["depth_px"],
            "diameter_px": v["diameter_px"],
            "depth_mm": v["depth_mm"],
            "diameter_mm": v["diameter_mm"],
            "direction": v["direction"],
            "area_px": v["area_px"],
            "area_mm2": v["area_mm2"],
            "bbox_px": v["bbox_px"],
            "label": v["label"],
        }
        for v in data["vessels"]
    ]
    return data


@app.command("info")
def info(
    file: Path = typer.Argument(..., help="DICOM file"), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Header metadata: UIDs, frames, patient identity, ultrasound regions, calibration."""
    im = _im()
    try:
        meta = im.metadata_from_dataset(im.read_dataset(file, pixels=False))
    except im.ImagingError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(meta.model_dump(mode="json")))
        return
    typer.echo(
        f"{file}: {meta.modality} {meta.columns}x{meta.rows}, {meta.frames} frame(s), "
        f"{meta.photometric_interpretation}"
    )
    typer.echo(
        f"  patient: {meta.patient.name or '-'} / {meta.patient.id or '-'} / {meta.patient.birth_date or '-'}"
    )
    typer.echo(f"  study {meta.study_instance_uid}, SOP {meta.sop_instance_uid}")
    for r in meta.regions:
        scale = r.mm_per_px()
        typer.echo(
            f"  region {r.index}: {r.data_type_name} box ({r.x0},{r.y0})-({r.x1},{r.y1})"
            + (f" {scale[0]:.4f} x {scale[1]:.4f} mm/px" if scale else "")
            + ("" if r.fits_image else " [outside the image]")
        )
    cal = meta.calibration
    cal_text = f"{cal.mm_per_px_x:.4f} x {cal.mm_per_px_y:.4f} mm/px ({cal.source})" if cal else "none"
    typer.echo(f"  calibration: {cal_text}")
    typer.echo(f"  burned-in annotation: {meta.burned_in_annotation or 'not declared'}")
    for w in meta.warnings:
        typer.echo(f"  warning: {w}")


def _analyse_file(
    file: Path,
    indices: list[int] | None,
    *,
    frame: int,
    mode: DopplerMode,
    box: str | None,
    skin_line: float | None,
    mm_per_px: float | None,
    overlay: Path | None,
) -> tuple[StudyMetadata, list[FlowResult]]:
    """Analyse `indices` (None: just `frame`); raises ImagingError."""
    im = _im()
    ds = im.read_dataset(file)
    meta = im.metadata_from_dataset(ds)
    calib = _calibration(meta, mm_per_px)
    chosen_box = _box(box) if box else None
    frames = indices if indices is not None else [frame]
    results: list[FlowResult] = []
    area = None
    has_region = any(r.fits_image and (r.is_color_flow or r.is_tissue) for r in meta.regions)
    for index in frames:
        rgb = im.frame_rgb(ds, index)
        if len(frames) > 1 and chosen_box is None and area is None and not has_region:
            area = im.bmode_area(rgb)  # one B-mode area for the whole cine
        analysis = im.analyse_frame(
            rgb,
            metadata=meta,
            calibration=calib,
            box=chosen_box,
            skin_line_px=skin_line,
            mode=mode,
            frame=index,
            area=area,
        )
        if overlay is not None and not results:
            im.save_png(im.flow_overlay(rgb, analysis), overlay)
        results.append(analysis.result)
    return meta, results


@app.command("doppler")
def doppler(
    file: Path = typer.Argument(..., help="DICOM file (colour or power Doppler)"),
    frame: int = typer.Option(0, "--frame", help="0-based frame index"),
    all_frames: bool = typer.Option(False, "--all-frames", help="analyse every frame of a cine"),
    mode: DopplerMode = typer.Option(DopplerMode.color, "--mode", help="color (direction from hue) or power"),
    box: str = typer.Option(None, "--box", help="analysed box x0,y0,x1,y1 (overrides the regions)"),
    skin_line: float = typer.Option(
        None, "--skin-line", help="row of the skin surface (overrides detection)"
    ),
    mm_per_px: float = typer.Option(None, "--mm-per-px", help="pixel size when the file has no calibration"),
    overlay: Path = typer.Option(None, "--overlay", help="write an overlay PNG (first analysed frame)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Colour-flow pixels and vessel cross-sections (centre, depth below the skin, diameter)."""
    im = _im()
    try:
        meta = im.metadata_from_dataset(im.read_dataset(file, pixels=False))
        _, results = _analyse_file(
            file,
            list(range(meta.frames)) if all_frames else None,
            frame=frame,
            mode=mode,
            box=box,
            skin_line=skin_line,
            mm_per_px=mm_per_px,
            overlay=overlay,
        )
    except im.ImagingError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        payload: dict[str, object] = (
            _flow_json(results[0])
            if not all_frames
            else {
                "frames": [_flow_json(r) for r in results],
                "tracks": [t.model_dump(mode="json") for t in im.track_vessels(results)],
            }
        )
        typer.echo(json.dumps(payload))
        return
    for r in results:
        typer.echo(
            f"frame {r.frame}: {r.flow_pixels} flow px "
            f"({100 * r.flow_fraction:.2f}% of {r.analysed_pixels} px, "
            f"box {r.box} from {r.box_source}), {len(r.vessels)} vessel(s)"
        )
        for v in r.vessels:
            depth = f"{v.depth_mm:.2f} mm" if v.depth_mm is not None else f"{v.depth_px:.1f} px"
            diameter = f"{v.diameter_mm:.2f} mm" if v.diameter_mm is not None else f"{v.diameter_px:.1f} px"
            typer.echo(
                f"  #{v.label} at ({v.centroid_px[0]:.1f}, {v.centroid_px[1]:.1f}) depth {depth} "
                f"diameter {diameter} {v.direction.value}"
            )
        for w in r.warnings:
            typer.echo(f"  warning: {w}")


@app.command("map")
def vascular_map(
    file: Path = typer.Argument(..., help="calibrated colour-Doppler DICOM file"),
    region: str = typer.Option(..., "--region", help="region code, e.g. glabella, temple"),
    side: Side = typer.Option(None, "--side"),
    landmark: str = typer.Option(None, "--landmark", help="landmark name, e.g. tragus"),
    landmark_x: float = typer.Option(None, "--landmark-x", help="image column of the landmark (px)"),
    kind: str = typer.Option("unknown", "--kind", help="artery, vein or unknown (treated as artery)"),
    frame: int = typer.Option(0, "--frame"),
    all_frames: bool = typer.Option(False, "--all-frames", help="follow vessels through the whole cine"),
    min_persistence: float = typer.Option(0.25, "--min-persistence", min=0.0, max=1.0),
    min_diameter_mm: float = typer.Option(0.0, "--min-diameter-mm", min=0.0, help="leave out smaller blobs"),
    layers_line: str = typer.Option(
        None, "--layers-line", help="scan line x0,y0,x1,y1 to measure the layers"
    ),
    mode: DopplerMode = typer.Option(DopplerMode.color, "--mode"),
    box: str = typer.Option(None, "--box"),
    mm_per_px: float = typer.Option(None, "--mm-per-px"),
    stored_path: str = typer.Option(None, "--stored-path", help="image store path to keep in the references"),
) -> None:
    """Vascular map (JSON) of one region from a Doppler image or cine, for the plan check."""
    im = _im()
    if kind not in ("artery", "vein", "unknown"):
        raise _fail("--kind must be artery, vein or unknown")
    try:
        meta = im.metadata_from_dataset(im.read_dataset(file, pixels=False))
        meta_full, results = _analyse_file(
            file,
            list(range(meta.frames)) if all_frames else None,
            frame=frame,
            mode=mode,
            box=box,
            skin_line=None,
            mm_per_px=mm_per_px,
            overlay=None,
        )
        ref = _ref(meta_full, frame).model_copy(update={"frame": None, "stored_path": stored_path})
        thickness = None
        if layers_line:
            x0, y0, x1, y1 = _numbers(layers_line, 4, "--layers-line")
            _, _, rgb = _load(file, frame)
            thickness = im.measure_thickness(
                rgb, im.ScanLine(start=(x0, y0), end=(x1, y1)), _calibration(meta_full, mm_per_px)
            )
        if all_frames:
            calib = _calibration(meta_full, mm_per_px)
            vmap = im.vascular_map_from_tracks(
                im.track_vessels(results),
                region=region,
                side=side,
                landmark=landmark,
                landmark_x_px=landmark_x,
                mm_per_px_x=calib.mm_per_px_x if calib else None,
                image=ref,
                kind=kind,  # type: ignore[arg-type]
                min_persistence=min_persistence,
                min_diameter_mm=min_diameter_mm,
            )
            if thickness is not None:
                vmap = vmap.model_copy(
                    update={
                        "layers": im.vascular_map_from_flow(
                            results[0], region=region, thickness=thickness
                        ).layers
                    }
                )
        else:
            vmap = im.vascular_map_from_flow(
                results[0],
                region=region,
                side=side,
                landmark=landmark,
                landmark_x_px=landmark_x,
                image=ref,
                kind=kind,  # type: ignore[arg-type]
                thickness=thickness,
                min_diameter_mm=min_diameter_mm,
            )
        vmap = vmap.model_copy(update={"acquired_on": (meta_full.acquired_at or "")[:10] or None})
    except im.ImagingError as exc:
        raise _fail(str(exc)) from None
    typer.echo(json.dumps(vmap.model_dump(mode="json")))


@app.command("check")
def check_plan(
    plan_file: Path = typer.Argument(..., help="plan document JSON (regenguide.plan/1)"),
    map_files: list[Path] = typer.Option(
        [], "--map", help="vascular map JSON from `imaging map` (repeatable)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check a plan's injections against vascular maps (findings shaped like CDS Hooks cards)."""
    im = _im()
    try:
        plan = PlanDocument.model_validate_json(plan_file.read_text(encoding="utf-8"))
        maps = [im.VascularMap.model_validate_json(p.read_text(encoding="utf-8")) for p in map_files]
    except OSError as exc:
        raise _fail(f"cannot read {exc.filename}: {exc.strerror}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(f"invalid {exc.title}: {where}: {first['msg']} ({exc.error_count()} error(s))") from None
    findings = im.vascular_findings(plan, maps)
    if as_json:
        typer.echo(json.dumps({"findings": [f.model_dump(mode="json") for f in findings]}))
        return
    if not findings:
        typer.echo("no vascular-map findings")
    for f in findings:
        typer.echo(f"[{f.indicator.value}] {f.rule}: {f.summary}")


@app.command("phantom")
def phantom(
    out: Path = typer.Argument(..., help="output DICOM file"),
    seed: int = typer.Option(0, "--seed"),
    frames: int = typer.Option(1, "--frames", min=1, max=200),
    truth: Path = typer.Option(None, "--truth", help="also write the ground truth as JSON"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write a calibrated synthetic skin phantom with colour-Doppler vessels of known geometry."""
    im = _im()
    try:
        ph = im.make_phantom(seed, im.PhantomSpec(frames=frames))
        im.phantom_dataset(ph).save_as(out, enforce_file_format=True)
    except (im.ImagingError, OSError) as exc:
        raise _fail(str(exc)) from None
    data = ph.truth.model_dump(mode="json")
    if truth is not None:
        truth.write_text(json.dumps(data, indent=2), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(data))
    else:
        typer.echo(f"wrote {out}: {len(ph.truth.vessels)} vessel(s), {ph.truth.mm_per_px} mm/px, seed {seed}")


@app.command("deidentify")
def deidentify(
    src: Path = typer.Argument(..., help="input DICOM file"),
    dst: Path = typer.Argument(..., help="output DICOM file"),
    uid_secret: str = typer.Option(
        None,
        "--uid-secret",
        envvar="REGENGUIDE_DEID_SECRET",
        help="secret keying the new UIDs (same secret = same UIDs across files and runs)",
    ),
    pseudonym: str = typer.Option(None, "--pseudonym", help="study code written to PatientName/PatientID"),
    mask_outside_regions: bool = typer.Option(
        False, "--mask-outside-regions", help="blank pixels outside the US regions"
    ),
    mask_box: list[str] = typer.Option([], "--mask-box", help="blank a box x0,y0,x1,y1 (repeatable)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """De-identify for research export (DICOM PS3.15 basic profile)."""
    im = _im()
    from regenguide.imaging.deid import UidMapper

    boxes = [_box(b) for b in mask_box]
    if src.resolve() == dst.resolve():
        raise _fail("write the de-identified copy to another file; the original is kept")
    try:
        report = im.deidentify_file(
            src,
            dst,
            uid_mapper=UidMapper(uid_secret) if uid_secret else None,
            pseudonym=pseudonym,
            mask_outside_regions=mask_outside_regions,
            mask_boxes=boxes,
        )
    except (im.ImagingError, OSError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json")))
        return
    typer.echo(
        f"wrote {dst}: {len(report.removed)} removed, {len(report.changed)} changed, "
        f"{report.uids_mapped} UID(s) mapped, {report.private_removed} private removed"
    )
    for w in report.warnings:
        typer.echo(f"warning: {w}")


# --- measure ------------------------------------------------------------------------------------


def _emit(observations: list[Observation], as_json: bool, warnings: list[str] | None = None) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "observations": [o.model_dump(mode="json") for o in observations],
                    "warnings": warnings or [],
                }
            )
        )
        return
    for o in observations:
        typer.echo(f"{o.code}: {o.value:.3f} {o.unit}" + (" (edited)" if o.edited else ""))
    for w in warnings or []:
        typer.echo(f"warning: {w}")


@measure_app.command("distance")
def measure_distance(
    file: Path = typer.Argument(...),
    start: str = typer.Option(..., "--from", help="x,y pixels"),
    end: str = typer.Option(..., "--to", help="x,y pixels"),
    frame: int = typer.Option(0, "--frame"),
    mm_per_px: float = typer.Option(None, "--mm-per-px"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Distance between two points in mm."""
    im = _im()
    p, q = _point(start, "--from"), _point(end, "--to")
    try:
        meta = im.metadata_from_dataset(im.read_dataset(file, pixels=False))
        obs = im.distance_observation(p, q, _calibration(meta, mm_per_px), _ref(meta, frame))
    except im.ImagingError as exc:
        raise _fail(str(exc)) from None
    _emit([obs], as_json)


@measure_app.command("area")
def measure_area(
    file: Path = typer.Argument(...),
    point: list[str] = typer.Option(..., "--point", help="outline vertex x,y (repeat, at least 3)"),
    frame: int = typer.Option(0, "--frame"),
    mm_per_px: float = typer.Option(None, "--mm-per-px"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Area of a traced deposit outline in mm2."""
    im = _im()
    points = [_point(p) for p in point]
    try:
        meta = im.metadata_from_dataset(im.read_dataset(file, pixels=False))
        obs = im.area_observation(points, _calibration(meta, mm_per_px), _ref(meta, frame))
    except im.ImagingError as exc:
        raise _fail(str(exc)) from None
    _emit([obs], as_json)


@measure_app.command("volume")
def measure_volume(
    ellipsoid: str = typer.Option(None, "--ellipsoid", help="three diameters L,W,H in mm"),
    slice_areas: str = typer.Option(None, "--slice-areas", help="traced slice areas in mm2, comma-separated"),
    spacing: float = typer.Option(None, "--spacing", help="distance between parallel slices, mm"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Deposit volume in mL: ellipsoid from three diameters, or Cavalieri from parallel slices."""
    im = _im()
    if (ellipsoid is None) == (slice_areas is None):
        raise _fail("give exactly one of --ellipsoid L,W,H or --slice-areas A1,A2,... with --spacing")
    try:
        if ellipsoid is not None:
            length, width, height = _numbers(ellipsoid, 3, "--ellipsoid")
            obs = im.ellipsoid_volume_observation(length, width, height)
        else:
            if spacing is None:
                raise _fail("--slice-areas needs --spacing (mm between slices)")
            try:
                areas = [float(a) for a in slice_areas.split(",") if a.strip()]
            except ValueError:
                raise _fail(f"--slice-areas must be numbers in mm2, got {slice_areas!r}") from None
            obs = im.Observation(
                code="deposit-volume",
                display="Volume of a deposit from parallel traced slices",
                value=im.volume_from_slices_ml(areas, spacing),
                unit="mL",
                method="Cavalieri: slice spacing x sum of traced areas (imaging.cavalieri-gundersen-1987)",
                geometry={"slice_areas_mm2": areas, "spacing_mm": spacing, "slices": len(areas)},
                edited=True,
            )
    except im.ImagingError as exc:
        raise _fail(str(exc)) from None
    _emit([obs], as_json)


@measure_app.command("thickness")
def measure_thickness_cmd(
    file: Path = typer.Argument(...),
    line: str = typer.Option(..., "--line", help="scan line x0,y0,x1,y1 from the surface downwards"),
    band: int = typer.Option(21, "--band", min=1, max=201, help="pixels averaged across the line"),
    skin: float = typer.Option(None, "--skin", help="skin boundary, px along the line (edit)"),
    dermis_bottom: float = typer.Option(None, "--dermis-bottom", help="dermis/subcutis junction, px (edit)"),
    fascia: float = typer.Option(None, "--fascia", help="fascia, px along the line (edit)"),
    frame: int = typer.Option(0, "--frame"),
    mm_per_px: float = typer.Option(None, "--mm-per-px"),
    overlay: Path = typer.Option(None, "--overlay", help="write an overlay PNG"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dermal and subcutaneous thickness along a scan line (boundaries detected, editable)."""
    im = _im()
    x0, y0, x1, y1 = _numbers(line, 4, "--line")
    overrides = {
        k: v
        for k, v in {"skin": skin, "dermis_bottom": dermis_bottom, "fascia": fascia}.items()
        if v is not None
    }
    try:
        _, meta, rgb = _load(file, frame)
        result = im.measure_thickness(
            rgb,
            im.ScanLine(start=(x0, y0), end=(x1, y1), band_px=band),
            _calibration(meta, mm_per_px),
            overrides=overrides,
            image_ref=_ref(meta, frame),
        )
    except im.ImagingError as exc:
        raise _fail(str(exc)) from None
    if overlay is not None:
        im.save_png(im.thickness_overlay(rgb, result), overlay)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "observations": [o.model_dump(mode="json") for o in result.observations],
                    "boundaries": result.boundaries.model_dump(mode="json"),
                    "warnings": result.warnings,
                }
            )
        )
        return
    _emit(result.observations, False, result.warnings)


@app.command("import")
def import_studies(
    files: list[Path] = typer.Argument(..., help="DICOM files"),  # noqa: B008
    patient: int = typer.Option(..., "--patient", help="patient id the studies belong to"),
    procedure: int | None = typer.Option(None, "--procedure", help="link to this procedure"),
    visit: int | None = typer.Option(None, "--visit", help="link to this follow-up visit"),
    region: str | None = typer.Option(None, "--region", help="anatomical region imaged"),
    allow_missing_identity: bool = typer.Option(
        False, "--allow-missing-identity", help="accept files whose header has no patient id or birth date"
    ),
) -> None:
    """Import DICOM studies into the database under a patient; the header identity must match the patient
    (record number, birth date) or nothing is stored."""
    from regenguide.cli.core import _engine
    from regenguide.config import get_settings
    from regenguide.services.imaging import StudyError, import_study, new_files_removed_on_failure
    from regenguide.store.audit import AuditRecord, append
    from regenguide.store.db import transaction

    root = get_settings().image_dir
    imported = []
    try:
        # All files or none: a failure rolls the rows back and deletes the image files written so far.
        with new_files_removed_on_failure() as written, transaction(_engine()) as db:
            for path in files:
                if not path.is_file():
                    raise _fail(f"{path} does not exist")
                study = import_study(db, path, patient, image_root=root, procedure_id=procedure, visit_id=visit,
                                     region=region, allow_missing_identity=allow_missing_identity,
                                     written=written)
                append(db, AuditRecord(username="cli", action="create", resource="imaging_studies",
                                       resource_id=study.id, patient_id=patient, payload={"sha256": study.sha256}))
                imported.append((study.id, path.name, study.frames, study.calibrated))
    except StudyError as exc:
        raise _fail(f"{exc} (nothing imported)") from None
    for sid, name, frames, calibrated in imported:
        typer.echo(f"study {sid}: {name}, {frames} frame(s), {'calibrated' if calibrated else 'no calibration'}")
