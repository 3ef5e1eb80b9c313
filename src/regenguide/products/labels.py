"""Print-ready product labels (PDF and PNG) with a Code 128 barcode of the identifier.

The barcode carries the identifier only (ISBT 128 DS 001 ``=`` + DIN + flags, or the local id); the
keyboard-entry check character is printed in a box after the eye-readable identifier and never put in
the barcode (iccbba-st001). Autologous products carry "FOR AUTOLOGOUS USE ONLY" (cfr-1271-90).

PDF: reportlab's canvas and its Code 128 barcode widget. PNG: the same layout drawn with Pillow; the
bars come from reportlab's own Code 128 encoding (`Code128.decomposed`), so both outputs encode the
identical symbol. (reportlab's bitmap renderer needs a Cairo backend that is not installed, and no PDF
rasteriser is available, hence the small Pillow drawing routine.)
"""

from __future__ import annotations

import io
from datetime import date, datetime

from PIL import Image, ImageDraw, ImageFont
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas

from regenguide.domain.plan import Modality
from regenguide.products.custody import ProductSnapshot
from regenguide.products.din import IdScheme, ProductIdentifier, is_type3_flag

AUTOLOGOUS_TEXT = "FOR AUTOLOGOUS USE ONLY"  # cfr-1271-90 (wording unverified)
LABEL_W_MM = 100.0
LABEL_H_MM = 62.0
ALIQUOT_ROW_MM = 14.0  # extra height of an aliquot's label, for its second barcode
QUIET_MODULES = 10  # Code 128 quiet zone: at least 10 modules each side

_PRODUCT_NAMES = {
    Modality.prp: "Platelet-rich plasma (PRP)",
    Modality.microfat: "Microfat (autologous fat graft)",
    Modality.nanofat: "Nanofat (emulsified fat)",
    Modality.svf_mechanical: "Stromal vascular fraction (mechanical)",
    Modality.svf_enzymatic: "Stromal vascular fraction (enzymatic)",
    Modality.cal: "Cell-assisted lipotransfer graft",
    Modality.adsc_expanded: "Culture-expanded adipose stem cells",
    Modality.bmac: "Bone-marrow aspirate concentrate",
    Modality.hsct_autologous: "Autologous HPC (stem-cell transplant)",
    Modality.car_t: "CAR-T cells",
}


class LabelData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    identifier: ProductIdentifier
    product_type: Modality
    product_text: str = ""
    patient_name: str = Field(min_length=1)
    patient_dob: date
    patient_record_number: str = Field(min_length=1)
    collected_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    autologous: bool = True
    volume_ml: float | None = Field(default=None, gt=0)
    facility: str = ""

    @property
    def product_line(self) -> str:
        text = self.product_text or _PRODUCT_NAMES[self.product_type]
        if self.volume_ml is not None:
            text += f"  {self.volume_ml:g} mL"
        return text


def label_from_snapshot(
    snapshot: ProductSnapshot, patient_name: str, patient_dob: date, patient_record_number: str, facility: str = ""
) -> LabelData:
    return LabelData(
        identifier=snapshot.identifier,
        product_type=snapshot.product_type,
        product_text=snapshot.description,
        patient_name=patient_name,
        patient_dob=patient_dob,
        patient_record_number=patient_record_number,
        collected_at=snapshot.collected_at,
        expires_at=snapshot.expires_at,
        autologous=snapshot.autologous,
        volume_ml=snapshot.volume_ml,
        facility=facility,
    )


def _fmt(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M %Z").strip() if t else "not set"


def _lines(label: LabelData) -> list[tuple[str, str]]:
    """(caption, value) rows below the identifier, same order on PDF and PNG."""
    ident = label.identifier
    rows = [("Product", label.product_line)]
    if ident.division != "00":
        rows.append(("Division", f"{ident.division} of {ident.parent_key}"))
    rows += [
        ("Patient", label.patient_name),
        ("DOB / MRN", f"{label.patient_dob.isoformat()}   {label.patient_record_number}"),
        ("Collected", _fmt(label.collected_at)),
        ("EXPIRES", _fmt(label.expires_at)),
    ]
    if label.facility:
        rows.append(("Facility", label.facility))
    return rows


def printed_flags(ident: ProductIdentifier) -> str | None:
    """The flag characters printed (rotated) after the eye-readable DIN, or None: local identifiers have
    no flags, and type-3 flags (60 + the check value) are barcode-only, never printed (iccbba-st001)."""
    if ident.scheme is not IdScheme.isbt128 or is_type3_flag(ident.flags):
        return None
    return ident.flags


def label_height_mm(label: LabelData) -> float:
    return LABEL_H_MM + (ALIQUOT_ROW_MM if label.identifier.division != "00" else 0.0)


def aliquot_barcode_data(ident: ProductIdentifier) -> str | None:
    """Second barcode of an aliquot: its product key ``DIN/B0`` (RegenGuide convention, not an ISBT 128
    data structure). Sibling aliquots share the DIN barcode, so bedside verification needs this one."""
    return None if ident.division == "00" else ident.key


def _barcode(label: LabelData, bar_width_mm: float, data: str | None = None, height_mm: float = 12) -> Code128:
    return Code128(
        data or label.identifier.barcode_data(),
        barWidth=bar_width_mm * mm,
        barHeight=height_mm * mm,
        humanReadable=False,
        quiet=True,
        lquiet=QUIET_MODULES * bar_width_mm * mm,
        rquiet=QUIET_MODULES * bar_width_mm * mm,
    )


def render_label_pdf(label: LabelData) -> bytes:
    """One label page (100 × 62 mm; 76 mm for an aliquot, with its second barcode) as PDF bytes."""
    buf = io.BytesIO()
    extra = label_height_mm(label) - LABEL_H_MM
    w, h = LABEL_W_MM * mm, label_height_mm(label) * mm
    c = canvas.Canvas(buf, pagesize=(w, h), pageCompression=0)
    c.setTitle(f"Product label {label.identifier.key}")
    bc = _barcode(label, 0.33)
    bc.drawOn(c, 3 * mm, h - 16 * mm)
    aliquot = aliquot_barcode_data(label.identifier)
    if aliquot is not None:
        _barcode(label, 0.25, aliquot, height_mm=9).drawOn(c, 3 * mm, h - 28 * mm)
        c.setFont("Helvetica-Bold", 8)
        c.drawRightString(w - 4 * mm, h - 31 * mm, f"ALIQUOT {label.identifier.division}")
    # eye-readable identifier + flags + boxed check character
    y = h - 22 * mm - extra * mm
    ident = label.identifier
    c.setFont("Helvetica-Bold", 13)
    text = ident.eye_readable()
    c.drawString(5 * mm, y, text)
    x = 5 * mm + c.stringWidth(text, "Helvetica-Bold", 13) + 1.5 * mm
    flags = printed_flags(ident)
    if flags is not None:
        c.saveState()
        c.setFont("Helvetica", 7)
        c.translate(x + 2 * mm, y)
        c.rotate(90)  # flags printed rotated 90° (US eye-readable format, iccbba-st001)
        c.drawString(0, 0, flags)
        c.restoreState()
        x += 4 * mm
    c.rect(x, y - 1.2 * mm, 5 * mm, 6 * mm, stroke=1, fill=0)
    c.drawCentredString(x + 2.5 * mm, y, ident.check_char)
    # details
    y -= 6 * mm
    for caption, value in _lines(label):
        c.setFont("Helvetica", 6.5)
        c.drawString(5 * mm, y, caption)
        c.setFont("Helvetica-Bold" if caption == "EXPIRES" else "Helvetica", 8.5)
        c.drawString(25 * mm, y, value)
        y -= 4.2 * mm
    if label.autologous:
        c.setFont("Helvetica-Bold", 10)
        c.drawCentredString(w / 2, 2.5 * mm, AUTOLOGOUS_TEXT)
    c.showPage()
    c.save()
    return buf.getvalue()


def code128_modules(data: str) -> list[tuple[bool, int]]:
    """(is_bar, width in modules) runs of the Code 128 symbol, from reportlab's encoder."""
    bc = Code128(data)
    bc.validate()
    bc.encode()
    bc.decompose()
    runs = []
    for ch in bc.decomposed:
        runs.append((ch.isupper(), ord(ch.upper()) - ord("A") + 1))
    return runs


def _draw_bars(
    draw: ImageDraw.ImageDraw, runs: list[tuple[bool, int]], x: int, top: int, bottom: int, module_px: int
) -> None:
    for is_bar, n in runs:
        if is_bar:
            draw.rectangle([x, top, x + n * module_px - 1, bottom], fill=0)
        x += n * module_px


def render_label_png(label: LabelData, dpi: int = 300) -> bytes:
    """The same label as a PNG at `dpi` (bars aligned to whole pixels for reliable scanning)."""
    px_per_mm = dpi / 25.4
    extra = label_height_mm(label) - LABEL_H_MM
    w, h = round(LABEL_W_MM * px_per_mm), round(label_height_mm(label) * px_per_mm)
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    runs = code128_modules(label.identifier.barcode_data())
    total_modules = sum(n for _, n in runs) + 2 * QUIET_MODULES
    module_px = max(2, min(round(0.33 * px_per_mm), (w - round(6 * px_per_mm)) // total_modules))
    x = round(3 * px_per_mm) + QUIET_MODULES * module_px
    _draw_bars(draw, runs, x, round(3 * px_per_mm), round(15 * px_per_mm), module_px)
    aliquot = aliquot_barcode_data(label.identifier)
    if aliquot is not None:
        a_runs = code128_modules(aliquot)
        a_module = max(2, min(round(0.25 * px_per_mm), (w - round(6 * px_per_mm)) // (sum(n for _, n in a_runs) + 20)))
        a_x = round(3 * px_per_mm) + QUIET_MODULES * a_module
        _draw_bars(draw, a_runs, a_x, round(18 * px_per_mm), round(27 * px_per_mm), a_module)
        tag = f"ALIQUOT {label.identifier.division}"
        f_tag = ImageFont.load_default(size=max(8, round(8 / 72 * dpi)))
        draw.text(
            (w - round(4 * px_per_mm) - draw.textlength(tag, font=f_tag), round(28 * px_per_mm)),
            tag,
            fill=0,
            font=f_tag,
        )

    def font(size_pt: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        return ImageFont.load_default(size=max(8, round(size_pt / 72 * dpi)))

    ident = label.identifier
    y = round((18 + extra) * px_per_mm)
    f_id = font(13)
    text = ident.eye_readable()
    draw.text((round(5 * px_per_mm), y), text, fill=0, font=f_id)
    x = round(5 * px_per_mm) + round(draw.textlength(text, font=f_id)) + round(1.5 * px_per_mm)
    flags = printed_flags(ident)
    if flags is not None:
        f_flag = font(7)
        tw = round(draw.textlength(flags, font=f_flag)) + 2
        flag = Image.new("L", (tw, round(7 / 72 * dpi) + 4), 255)
        ImageDraw.Draw(flag).text((1, 0), flags, fill=0, font=f_flag)
        img.paste(flag.rotate(90, expand=True), (x, y))
        x += round(4 * px_per_mm)
    box = round(5 * px_per_mm)
    draw.rectangle([x, y - round(0.5 * px_per_mm), x + box, y + round(5.5 * px_per_mm)], outline=0, width=3)
    cw = draw.textlength(ident.check_char, font=f_id)
    draw.text((x + (box - cw) / 2, y), ident.check_char, fill=0, font=f_id)
    y += round(7 * px_per_mm)
    f_cap, f_val = font(6.5), font(8.5)
    for caption, value in _lines(label):
        draw.text((round(5 * px_per_mm), y + 4), caption, fill=0, font=f_cap)
        draw.text((round(25 * px_per_mm), y), value, fill=0, font=f_val)
        y += round(4.2 * px_per_mm)
    if label.autologous:
        f_auto = font(10)
        aw = draw.textlength(AUTOLOGOUS_TEXT, font=f_auto)
        draw.text(((w - aw) / 2, h - round(6.5 * px_per_mm)), AUTOLOGOUS_TEXT, fill=0, font=f_auto)
    out = io.BytesIO()
    img.save(out, format="PNG", dpi=(dpi, dpi))
    return out.getvalue()
