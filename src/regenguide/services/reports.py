"""Complete-cohort outcome report (HTML and PDF, with plots) for a clinic or a modality.

"Complete cohort" is the point: every treated patient in the scope is counted; follow-up visits that
were missed and patients lost to follow-up are shown as such, never silently dropped, so results can
be published or advertised honestly (the seed review names selective reporting as an ethical breach).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from jinja2 import Environment, select_autoescape  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sqlalchemy import case, distinct, func, select  # noqa: E402

from regenguide import __version__  # noqa: E402
from regenguide.services import analytics  # noqa: E402
from regenguide.store import models as m  # noqa: E402


@dataclass
class CohortReport:
    title: str
    scope: dict[str, Any]
    generated_at: str
    numbers: dict[str, Any]
    plots: dict[str, bytes] = field(default_factory=dict)
    html: str = ""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def complication_plot(rows: list[dict[str, Any]], title: str) -> bytes:
    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    labels = [" / ".join(str(v) for v in r["group"].values()) for r in rows]
    rates = np.array([100 * r["rate"] for r in rows])
    lo = np.maximum(rates - np.array([100 * r["ci_low"] for r in rows]), 0.0)  # rounding can cross zero
    hi = np.maximum(np.array([100 * r["ci_high"] for r in rows]) - rates, 0.0)
    y = np.arange(len(rows))
    ax.barh(y, rates, xerr=[lo, hi], color="#1f5fa8", alpha=0.85, capsize=3)
    ax.set_yticks(y, [f"{lab} (n={r['n']})" for lab, r in zip(labels, rows, strict=True)])
    ax.invert_yaxis()
    ax.set_xlabel("procedures with ≥ 1 complication, % (Wilson 95% CI)")
    ax.set_title(title)
    return _png(fig)


def follow_up_plot(visits: dict[str, int]) -> bytes:
    fig = Figure(figsize=(6.5, 1.8))
    ax = fig.add_subplot(1, 1, 1)
    order = [("completed", "#1e7a3c"), ("upcoming", "#c4cbd4"), ("due", "#8a96a6"), ("scheduled", "#8a96a6"),
             ("window_closed_not_done", "#e07b00"), ("missed", "#b3261e"), ("cancelled", "#6b4f2a")]
    left = 0
    for status, colour in order:
        n = visits.get(status, 0)
        if n:
            ax.barh([0], [n], left=left, color=colour, label=f"{status.replace('_', ' ')} ({n})")
            left += n
    ax.set_yticks([])
    ax.set_xlabel("follow-up visits")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, frameon=False)
    return _png(fig)


def km_plot_png(frame: Any) -> bytes | None:
    if frame.empty:
        return None
    from regenguide.evidence.plots import km_plot

    weights = frame["w"].to_numpy(dtype=int)
    days = np.repeat(frame["days"].to_numpy(dtype=float), weights)
    events = np.repeat(frame["event"].to_numpy(dtype=int), weights)
    groups = np.repeat(frame["modality"].to_numpy(dtype=object), weights)
    buf = io.BytesIO()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = km_plot(days, events, groups, Path(tmp) / "km.png", title="Time to retreatment")
        buf.write(path.read_bytes())
    return buf.getvalue()


def _template() -> str:
    from importlib import resources

    return (resources.files("regenguide.services") / "templates" / "cohort_report.html").read_text(encoding="utf-8")


def _adverse_events(engine: analytics.Bind, where: list[Any]) -> list[dict[str, Any]]:
    cohort = select(m.Procedure.id).where(*where)
    serious = func.sum(case((m.AdverseEvent.serious.is_(True), 1), else_=0))
    stmt = (
        select(m.AdverseEvent.event_type, func.count().label("n"), serious.label("serious"),
               func.max(m.AdverseEvent.severity).label("max_grade"))
        .where(m.AdverseEvent.procedure_id.in_(cohort))
        .group_by(m.AdverseEvent.event_type)
        .order_by(func.count().desc(), m.AdverseEvent.event_type)
    )
    with analytics.connect(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def build_report(engine: analytics.Bind, *, modality: str | None = None, site_id: int | None = None) -> CohortReport:
    where = analytics.scope(modality, site_id)
    follow = analytics.follow_up_completeness(engine, where)
    with analytics.connect(engine) as conn:
        procedures = conn.execute(select(func.count()).select_from(m.Procedure).where(*where)).scalar_one()
        site_name = conn.execute(select(m.Site.name).where(m.Site.id == site_id)).scalar() if site_id else None
        patients = conn.execute(select(func.count(distinct(m.Procedure.patient_id))).where(*where)).scalar_one()
    grouping: analytics.Grouping = "modality_guidance" if modality else "modality"
    numbers: dict[str, Any] = {
        "treated_patients": patients,
        "procedures": procedures,
        "visits": follow["visits"],
        "visits_text": ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(follow["visit_states"].items()))
        or "none scheduled",
        "as_of": follow["as_of"],
        "patients_with_missed_visits": follow["patients_with_missed_visits"],
        "patients_with_visits_not_done": follow["patients_with_visits_not_done"],
        "lost_to_follow_up": follow["lost_to_follow_up"],
        "lost_rule": follow["lost_rule"],
        "complications": analytics.complication_rates(engine, grouping, where=where)["rows"],
        "guided": analytics.guided_vs_landmark(engine, where=where),
        "retention": analytics.retention_by_processing(engine, where=where)["rows"],
        "durability": analytics.durability(engine, where=where),
        "adverse_events": _adverse_events(engine, where),
    }
    scope = {"modality": modality, "site_id": site_id, "site": site_name}
    title = "Complete-cohort outcome report" + (f": {modality}" if modality else "") + (
        f" — {site_name}" if site_name else "")
    report = CohortReport(title=title, scope=scope, generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                          numbers=numbers)
    if numbers["complications"]:
        report.plots["complications"] = complication_plot(numbers["complications"], "Complications")
    if follow["visit_states"]:
        report.plots["follow_up"] = follow_up_plot(follow["visit_states"])
    km = km_plot_png(analytics.durability_frame(engine, where))
    if km:
        report.plots["durability"] = km
    scope_text = ", ".join(f"{k} {v}" for k, v in scope.items() if v) or "all clinics, all modalities"
    env = Environment(autoescape=select_autoescape(default=True))
    report.html = env.from_string(_template()).render(
        r=report, n=numbers, version=__version__, scope_text=scope_text,
        plots={k: base64.b64encode(v).decode() for k, v in report.plots.items()},
    )
    return report


def report_pdf(report: CohortReport) -> bytes:
    """The same report as PDF (reportlab platypus: text, tables and the same plots)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    n = report.numbers
    story: list[Any] = [
        Paragraph(report.title, styles["Title"]),
        Paragraph(f"Generated {report.generated_at} by RegenGuide {__version__}", styles["Normal"]),
        Spacer(1, 0.3 * cm),
        Paragraph(
            f"<b>Complete cohort.</b> Every treated patient in scope is included: {n['treated_patients']} patients, "
            f"{n['procedures']} procedures. Follow-up visits: {n['visits_text']}. "
            f"{n['patients_with_missed_visits']} patient(s) missed at least one visit and are shown, not dropped. "
            f"Lost to follow-up on {n['as_of']}: {len(n['lost_to_follow_up'])} patient(s).",
            styles["Normal"]),
    ]

    def image(key: str, width_cm: float = 16) -> None:
        if key in report.plots:
            img = Image(io.BytesIO(report.plots[key]))
            ratio = img.imageHeight / img.imageWidth
            img.drawWidth, img.drawHeight = width_cm * cm, width_cm * cm * ratio
            story.append(img)

    story += [Spacer(1, 0.3 * cm), Paragraph("Follow-up completeness", styles["Heading2"])]
    image("follow_up")
    story.append(Paragraph("Lost to follow-up", styles["Heading2"]))
    rule = n["lost_rule"]
    story.append(Paragraph(
        f"Rule ({rule['evidence'].replace('_', ' ')}): the last {rule['consecutive_missed']} visits not done, or a "
        f"visit not done and no contact for {rule['no_contact_months']} months. Every such patient is listed.",
        styles["Normal"]))
    if n["lost_to_follow_up"]:
        lost = [["Registry id", "Modality", "Visits not done", "Last contact", "Reason"]] + [
            [r["patient_id"], r["modality"], r["visits_not_done"], r["last_contact"], "; ".join(r["reasons"])]
            for r in n["lost_to_follow_up"]]
        lost_table = Table(lost)
        lost_table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                                        ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey)]))
        story.append(lost_table)
    else:
        story.append(Paragraph("None.", styles["Normal"]))
    story.append(Paragraph("Complications", styles["Heading2"]))
    rows = [["Group", "Procedures", "With complication", "Rate", "95% CI (Wilson)"]] + [
        [" / ".join(str(v) for v in r["group"].values()), r["n"], r["events"], f"{100 * r['rate']:.1f}%",
         f"{100 * r['ci_low']:.1f}–{100 * r['ci_high']:.1f}%"] for r in n["complications"]]
    table = Table(rows)
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey)]))
    story.append(table)
    image("complications")
    story.append(Paragraph("Durability: time to retreatment", styles["Heading2"]))
    image("durability", 13)
    buf = io.BytesIO()
    SimpleDocTemplate(buf, pagesize=A4, title=report.title, author="RegenGuide").build(story)
    return buf.getvalue()
