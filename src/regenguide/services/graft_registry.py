"""Feed the registry's graft follow-up measurements to the graft simulator's calibration.

Each fat-grafting procedure with a `graft_retention` observation (percent, the instrument's unit, or a
fraction) becomes one calibration observation. Its deposit geometry comes from the recorded aliquots, as in
the plan simulation (`regenguide.simulate.plan`): aliquots delivered mostly by cannula are threaded
retrograde along a tunnel (Coleman technique), a strand of diameter 2·sqrt(V/(π·L)) with L the knowledge
base's `default_tunnel_length_mm` (an explicitly labelled assumption: performed injections record no tunnel
length); other aliquots (needle or device not recorded) are boluses, spheres of diameter (6V/π)^(1/3)
(V in mm³). One SQL aggregation; no loop over injections."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import case, func, select

from regenguide.services.analytics import Bind, connect
from regenguide.simulate import CalibrationResult, calibrate
from regenguide.simulate.calibration import Observation
from regenguide.simulate.parameters import load_graft_knowledge
from regenguide.store import models as m

FAT = ("microfat", "nanofat", "cal")


def registry_observations(bind: Bind, code: str = "graft_retention") -> list[Observation]:
    bolus = (
        select(m.PerformedInjection.procedure_id.label("procedure_id"),
               func.avg(m.PerformedInjection.bolus_ml).label("bolus_ml"),
               func.avg(case((m.PerformedInjection.device == "cannula", 1.0), else_=0.0)).label("cannula"))
        .where(m.PerformedInjection.bolus_ml.is_not(None))
        .group_by(m.PerformedInjection.procedure_id)
        .subquery("bolus")
    )
    stmt = (
        select(m.Procedure.modality, m.Procedure.processing_method, bolus.c.bolus_ml, bolus.c.cannula,
               func.avg(case((m.Observation.unit == "%", m.Observation.value / 100.0),
                             else_=m.Observation.value)).label("retention"))
        .join(bolus, bolus.c.procedure_id == m.Procedure.id)
        .join(m.Observation, m.Observation.procedure_id == m.Procedure.id)
        .where(m.Observation.code == code, m.Observation.value.is_not(None), m.Procedure.modality.in_(FAT))
        .group_by(m.Procedure.id, m.Procedure.modality, m.Procedure.processing_method, bolus.c.bolus_ml,
                  bolus.c.cannula)
    )
    with connect(bind) as conn:
        rows = conn.execute(stmt).all()
    tunnel_cm = load_graft_knowledge().value("default_tunnel_length_mm") / 10.0
    out = []
    for r in rows:
        volume = float(r.bolus_ml)  # mL = cm^3
        strand = float(r.cannula) > 0.5 and tunnel_cm > 2.0 * math.sqrt(volume / (math.pi * tunnel_cm))
        out.append(Observation(
            geometry="cylinder" if strand else "sphere",
            diameter_mm=(20.0 * math.sqrt(volume / (math.pi * tunnel_cm)) if strand
                         else (6.0 * volume * 1000.0 / math.pi) ** (1.0 / 3.0)),
            observed_retention=min(max(float(r.retention), 0.0), 1.5),
            modality=r.modality,
            processing=r.processing_method or "unspecified",
        ))
    return out


def calibrate_from_registry(bind: Bind, **kwargs: Any) -> CalibrationResult:
    observations = registry_observations(bind)
    if len(observations) < 2:
        raise ValueError(f"calibration needs at least 2 fat-graft procedures with retention measured "
                         f"and aliquot sizes recorded; the registry has {len(observations)}")
    return calibrate(observations, **kwargs)
