"""Grading algorithms that are rules rather than sums: ASTCT CRS and ICANS (Lee 2019, `lee-2019-astct`),
Clavien-Dindo (`dindo-2004-clavien`), generic CTCAE v5.0 (`ctcae-v5`), and the measurements (hair
density, dermal thickness, graft retention, elastography with E = 3 rho c^2, `nowicki-2016-elastography`).

Each function takes plain values, validates what only it can validate (cross-item consistency) and
returns an `AlgorithmResult`. Item-level types and ranges are validated by the instrument engine
(`regenguide.outcomes.instruments`) from the YAML definitions before these run.

These are written by hand because no maintained Python library implements the ASTCT tables or
Clavien-Dindo; they are short decision tables, tested at every boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field


class ItemError(BaseModel):
    item: str
    message: str
    allowed: str = ""

    def __str__(self) -> str:
        return f"item {self.item!r}: {self.message}" + (f" (allowed: {self.allowed})" if self.allowed else "")


class InstrumentValidationError(ValueError):
    """Responses failed validation; `errors` names every offending item."""

    def __init__(self, instrument: str, errors: list[ItemError]) -> None:
        self.instrument = instrument
        self.errors = errors
        super().__init__(f"{instrument}: " + "; ".join(str(e) for e in errors))


class AlgorithmResult(BaseModel):
    value: float | int | str
    unit: str | None = None
    grade: str | None = None
    interpretation: str
    subscores: dict[str, float | int | str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


def _fail(instrument: str, item: str, message: str, allowed: str = "") -> InstrumentValidationError:
    return InstrumentValidationError(instrument, [ItemError(item=item, message=message, allowed=allowed)])


# --- ASTCT CRS -----------------------------------------------------------------------------------

FEVER_C = 38.0  # lee-2019-astct: fever is temperature >= 38 C
LOW_FLOW_MAX_L_MIN = 6.0  # lee-2019-astct: low-flow nasal cannula is <= 6 L/min

_HYPOTENSION_GRADE = {"none": 1, "no_vasopressor": 2, "one_vasopressor": 3, "multiple_vasopressors": 4}
_OXYGEN_GRADE = {"none": 1, "low_flow": 2, "high_flow": 3, "positive_pressure": 4}


def crs_grade(
    temperature_c: float,
    hypotension: str = "none",
    oxygen: str | None = None,
    oxygen_flow_l_min: float | None = None,
    fever_masked: bool = False,
    death_from_crs: bool = False,
) -> AlgorithmResult:
    """ASTCT CRS grade (Lee 2019): fever >= 38 C is required (unless masked by antipyretic or
    anticytokine therapy); grade = the more severe of hypotension and hypoxia (oxygen support).

    `oxygen_flow_l_min` (nasal cannula) classifies low vs high flow when `oxygen` is not given, and
    is checked against `oxygen="low_flow"` (which allows at most 6 L/min)."""
    if hypotension not in _HYPOTENSION_GRADE:
        raise _fail("crs_astct", "hypotension", f"unknown value {hypotension!r}", ", ".join(_HYPOTENSION_GRADE))
    if oxygen is None:
        if oxygen_flow_l_min is None or oxygen_flow_l_min == 0:
            oxygen = "none"
        else:
            oxygen = "low_flow" if oxygen_flow_l_min <= LOW_FLOW_MAX_L_MIN else "high_flow"
    if oxygen not in _OXYGEN_GRADE:
        raise _fail("crs_astct", "oxygen", f"unknown value {oxygen!r}", ", ".join(_OXYGEN_GRADE))
    if oxygen_flow_l_min is not None:
        if oxygen == "none" and oxygen_flow_l_min > 0:
            raise _fail("crs_astct", "oxygen_flow_l_min", f"{oxygen_flow_l_min} L/min given but oxygen is 'none'")
        if oxygen == "low_flow" and oxygen_flow_l_min > LOW_FLOW_MAX_L_MIN:
            raise _fail(
                "crs_astct",
                "oxygen_flow_l_min",
                f"{oxygen_flow_l_min} L/min is not low-flow",
                f"low_flow is <= {LOW_FLOW_MAX_L_MIN:g} L/min",
            )

    fever = temperature_c >= FEVER_C
    subscores: dict[str, float | int | str] = {
        "fever": "yes" if fever else "no",
        "hypotension": hypotension,
        "oxygen": oxygen,
    }
    warnings: list[str] = []
    if death_from_crs:
        return AlgorithmResult(
            value=5, unit="grade", grade="5", interpretation="Grade 5 CRS: death due to CRS", subscores=subscores
        )
    if not fever and not fever_masked:
        if hypotension != "none" or oxygen != "none":
            warnings.append(
                "hypotension or hypoxia without fever >= 38 C: not CRS by ASTCT unless fever was masked "
                "by antipyretic or anticytokine therapy (set fever_masked)"
            )
        return AlgorithmResult(
            value=0,
            unit="grade",
            grade="0",
            interpretation=f"No CRS: ASTCT requires fever >= {FEVER_C:g} C",
            subscores=subscores,
            warnings=warnings,
        )
    by_hypotension = _HYPOTENSION_GRADE[hypotension]
    by_oxygen = _OXYGEN_GRADE[oxygen]
    grade = max(by_hypotension, by_oxygen)
    if not fever and fever_masked and grade == 1:
        warnings.append(
            "fever masked and no hypotension or hypoxia: reported as grade 1 (RegenGuide reading of "
            "Lee 2019; the table grades masked CRS by hypotension and hypoxia)"
        )
    driver = (
        "fever only"
        if grade == 1
        else (
            "hypotension and hypoxia"
            if by_hypotension == by_oxygen
            else "hypotension"
            if by_hypotension > by_oxygen
            else "hypoxia"
        )
    )
    labels = {
        1: "fever only",
        2: "hypotension without vasopressors and/or low-flow oxygen",
        3: "one vasopressor and/or high-flow oxygen",
        4: "multiple vasopressors and/or positive pressure",
    }
    subscores.update({"grade_by_hypotension": by_hypotension, "grade_by_oxygen": by_oxygen})
    return AlgorithmResult(
        value=grade,
        unit="grade",
        grade=str(grade),
        interpretation=f"Grade {grade} CRS ({labels[grade]}); driven by {driver}",
        subscores=subscores,
        warnings=warnings,
    )


# --- ICE and ICANS ---------------------------------------------------------------------------------

ICE_MAX = {"orientation": 4, "naming": 3, "commands": 1, "writing": 1, "attention": 1}  # lee-2019-astct

_CONSCIOUSNESS = {
    "alert": 0,
    "awakens_spontaneously": 1,
    "awakens_to_voice": 2,
    "awakens_to_touch": 3,
    "unarousable": 4,
}
_SEIZURE = {"none": 0, "rapidly_resolving": 3, "prolonged": 4}
_MOTOR = {"none": 0, "deep_focal_weakness": 4}
_ICP = {"none": 0, "focal_oedema": 3, "diffuse": 4}


def ice_score(orientation: int, naming: int, commands: int, writing: int, attention: int) -> int:
    """ICE score 0-10 (Lee 2019): orientation 4, naming 3, commands 1, writing 1, attention 1."""
    values = {
        "orientation": orientation,
        "naming": naming,
        "commands": commands,
        "writing": writing,
        "attention": attention,
    }
    for item, value in values.items():
        if not 0 <= value <= ICE_MAX[item]:
            raise _fail("ice", item, f"{value} is out of range", f"0-{ICE_MAX[item]}")
    return sum(values.values())


def ice_domain_grade(ice: int) -> int:
    """Grade from the ICE score alone (lee-2019-astct): 10 -> 0, 7-9 -> 1, 3-6 -> 2, 0-2 -> 3.
    ICE 0 in an unarousable patient is grade 4 through the consciousness domain."""
    if not 0 <= ice <= 10:
        raise _fail("icans_astct", "ice_score", f"{ice} is out of range", "0-10")
    if ice == 10:
        return 0
    if ice >= 7:
        return 1
    if ice >= 3:
        return 2
    return 3


def icans_grade(
    ice: int | None,
    consciousness: str = "alert",
    seizure: str = "none",
    motor: str = "none",
    raised_icp: str = "none",
) -> AlgorithmResult:
    """ASTCT ICANS grade for adults (Lee 2019): the most severe domain. `ice` may be None only when
    the patient is unarousable (unable to perform ICE)."""
    for item, value, table in (
        ("consciousness", consciousness, _CONSCIOUSNESS),
        ("seizure", seizure, _SEIZURE),
        ("motor", motor, _MOTOR),
        ("raised_icp", raised_icp, _ICP),
    ):
        if value not in table:
            raise _fail("icans_astct", item, f"unknown value {value!r}", ", ".join(table))
    if ice is None and consciousness != "unarousable":
        raise _fail(
            "icans_astct", "ice_score", "required unless the patient is unarousable", "0-10, or the five ICE items"
        )
    if ice is not None and ice > 0 and consciousness == "unarousable":
        raise _fail(
            "icans_astct",
            "ice_score",
            f"an unarousable patient cannot perform the ICE assessment (got {ice}); leave it empty or give 0",
        )
    domains = {
        "ice": ice_domain_grade(ice) if ice is not None else 4,
        "consciousness": _CONSCIOUSNESS[consciousness],
        "seizure": _SEIZURE[seizure],
        "motor": _MOTOR[motor],
        "raised_icp": _ICP[raised_icp],
    }
    grade = max(domains.values())
    drivers = [name for name, g in domains.items() if g == grade and grade > 0]
    subscores: dict[str, float | int | str] = {f"grade_by_{k}": v for k, v in domains.items()}
    if ice is not None:
        subscores["ice_score"] = ice
    if grade == 0:
        text = "No ICANS (ICE 10, no other neurological domain affected)"
    else:
        text = f"Grade {grade} ICANS; driven by {', '.join(drivers)}"
    return AlgorithmResult(value=grade, unit="grade", grade=str(grade), interpretation=text, subscores=subscores)


# --- Clavien-Dindo and CTCAE -----------------------------------------------------------------------

CLAVIEN_ORDER = ["I", "II", "IIIa", "IIIb", "IVa", "IVb", "V"]  # dindo-2004-clavien


def clavien_dindo(grade: str, disability: bool = False) -> AlgorithmResult:
    """Clavien-Dindo grade with the suffix 'd' when the complication persists at discharge."""
    if grade not in CLAVIEN_ORDER:
        raise _fail("clavien_dindo", "grade", f"unknown grade {grade!r}", ", ".join(CLAVIEN_ORDER))
    if disability and grade == "V":
        raise _fail("clavien_dindo", "disability", "the suffix 'd' does not apply to grade V (death)")
    label = f"{grade}-d" if disability else grade
    return AlgorithmResult(
        value=label,
        unit="grade",
        grade=label,
        interpretation=f"Clavien-Dindo grade {grade}"
        + (" with disability at discharge (suffix d)" if disability else ""),
        subscores={"rank": CLAVIEN_ORDER.index(grade) + 1},
    )


CTCAE_GENERIC = {  # ctcae-v5, generic grade definitions
    1: "Mild; asymptomatic or mild symptoms; clinical or diagnostic observations only; intervention not indicated",
    2: "Moderate; minimal, local or non-invasive intervention indicated; limiting age-appropriate instrumental ADL",
    3: "Severe or medically significant but not immediately life-threatening; hospitalisation or prolongation "
    "indicated; disabling; limiting self-care ADL",
    4: "Life-threatening consequences; urgent intervention indicated",
    5: "Death related to adverse event",
}
_IMPACT_GRADE = {"mild": 1, "instrumental_adl": 2, "self_care_adl": 3, "life_threatening": 4, "death": 5}


def ctcae_grade(term: str, grade: int | None = None, impact: str | None = None) -> AlgorithmResult:
    """Generic CTCAE v5.0 grade for an adverse-event term, from the grade or the generic impact."""
    if not term.strip():
        raise _fail("ctcae", "term", "must not be empty")
    if grade is None and impact is None:
        raise _fail("ctcae", "grade", "give grade (1-5) or impact", ", ".join(_IMPACT_GRADE))
    if impact is not None:
        if impact not in _IMPACT_GRADE:
            raise _fail("ctcae", "impact", f"unknown value {impact!r}", ", ".join(_IMPACT_GRADE))
        derived = _IMPACT_GRADE[impact]
        if grade is not None and grade != derived:
            raise _fail("ctcae", "grade", f"grade {grade} contradicts impact {impact!r} (grade {derived})")
        grade = derived
    assert grade is not None
    if not 1 <= grade <= 5:
        raise _fail("ctcae", "grade", f"{grade} is out of range", "1-5")
    return AlgorithmResult(
        value=grade,
        unit="grade",
        grade=str(grade),
        interpretation=f"{term.strip()}: CTCAE grade {grade} - {CTCAE_GENERIC[grade]}",
        subscores={"term": term.strip()},
        warnings=["generic CTCAE definitions; the term-specific CTCAE definition takes precedence"],
    )


# --- measurements ----------------------------------------------------------------------------------

DEFAULT_TISSUE_DENSITY = 1000.0  # kg/m3, the usual soft-tissue assumption of SWE systems (nowicki-2016-elastography)


def youngs_modulus_from_speed(shear_wave_speed_m_s: float, density_kg_m3: float = DEFAULT_TISSUE_DENSITY) -> float:
    """E = 3 rho c^2 (Pa), returned in kPa. Assumes incompressible, isotropic, linear elastic tissue
    (shear modulus mu = rho c^2, E = 3 mu; nowicki-2016-elastography)."""
    if shear_wave_speed_m_s <= 0 or density_kg_m3 <= 0:
        raise ValueError("shear-wave speed and density must be positive")
    return 3.0 * density_kg_m3 * shear_wave_speed_m_s**2 / 1000.0


def speed_from_youngs_modulus(youngs_kpa: float, density_kg_m3: float = DEFAULT_TISSUE_DENSITY) -> float:
    """Inverse of `youngs_modulus_from_speed`: c = sqrt(E / (3 rho))."""
    if youngs_kpa <= 0 or density_kg_m3 <= 0:
        raise ValueError("Young's modulus and density must be positive")
    return math.sqrt(youngs_kpa * 1000.0 / (3.0 * density_kg_m3))


def elastography(
    shear_wave_speed_m_s: float | None = None,
    youngs_modulus_kpa: float | None = None,
    density_kg_m3: float = DEFAULT_TISSUE_DENSITY,
) -> AlgorithmResult:
    if (shear_wave_speed_m_s is None) == (youngs_modulus_kpa is None):
        raise _fail(
            "elastography_swe",
            "shear_wave_speed_m_s",
            "give exactly one of shear_wave_speed_m_s and youngs_modulus_kpa",
        )
    if shear_wave_speed_m_s is not None:
        e_kpa = youngs_modulus_from_speed(shear_wave_speed_m_s, density_kg_m3)
        c = shear_wave_speed_m_s
    else:
        assert youngs_modulus_kpa is not None
        e_kpa = youngs_modulus_kpa
        c = speed_from_youngs_modulus(youngs_modulus_kpa, density_kg_m3)
    return AlgorithmResult(
        value=round(e_kpa, 3),
        unit="kPa",
        interpretation=f"Young's modulus {e_kpa:.1f} kPa = shear-wave speed {c:.2f} m/s "
        f"(E = 3 rho c^2, rho = {density_kg_m3:g} kg/m3)",
        subscores={
            "shear_wave_speed_m_s": round(c, 4),
            "shear_modulus_kpa": round(e_kpa / 3.0, 3),
            "density_kg_m3": density_kg_m3,
        },
    )


def hair_density(hair_count: int, area_cm2: float, baseline_density: float | None = None) -> AlgorithmResult:
    """Hairs per cm2 = count / area (definition)."""
    if area_cm2 <= 0:
        raise _fail("hair_density", "area_cm2", "must be greater than 0")
    density = hair_count / area_cm2
    subscores: dict[str, float | int | str] = {}
    text = f"{density:.1f} hairs/cm2 ({hair_count} hairs in {area_cm2:g} cm2)"
    if baseline_density is not None:
        subscores["change_from_baseline"] = round(density - baseline_density, 3)
        if baseline_density > 0:
            subscores["percent_change"] = round(100.0 * (density - baseline_density) / baseline_density, 2)
        text += f"; change from baseline {density - baseline_density:+.1f}"
    return AlgorithmResult(value=round(density, 3), unit="hairs/cm2", interpretation=text, subscores=subscores)


def dermal_thickness(
    thickness_mm: float, baseline_mm: float | None = None, probe_mhz: float | None = None
) -> AlgorithmResult:
    subscores: dict[str, float | int | str] = {}
    text = f"Dermal thickness {thickness_mm:.2f} mm"
    if baseline_mm is not None:
        change = thickness_mm - baseline_mm
        subscores["change_mm"] = round(change, 4)
        subscores["percent_change"] = round(100.0 * change / baseline_mm, 2)
        text += f"; {change:+.2f} mm ({100.0 * change / baseline_mm:+.1f}%) from baseline"
    if probe_mhz is not None:
        subscores["probe_mhz"] = probe_mhz
    return AlgorithmResult(value=round(thickness_mm, 4), unit="mm", interpretation=text, subscores=subscores)


RETENTION_POOLED_FACE = (47.0, 41.0, 53.0)  # lv-2021-retention: pooled facial retention % (95% CI)
RETENTION_RANGE_FACE = (26.0, 83.0)  # lv-2021-retention: range across studies, %


def graft_retention(injected_ml: float, retained_ml: float, method: str | None = None) -> AlgorithmResult:
    """Volume retention = retained / injected (%), with the facial meta-analysis for context."""
    if injected_ml <= 0:
        raise _fail("graft_retention", "injected_ml", "must be greater than 0")
    pct = 100.0 * retained_ml / injected_ml
    pooled, lo, hi = RETENTION_POOLED_FACE
    warnings = []
    if pct > 100.0:
        warnings.append(
            "retained volume exceeds injected volume: oedema, measurement error or a different "
            "baseline; check the measurement"
        )
    subscores: dict[str, float | int | str] = {"ratio": round(retained_ml / injected_ml, 4)}
    if method:
        subscores["method"] = method
    return AlgorithmResult(
        value=round(pct, 2),
        unit="%",
        interpretation=f"{pct:.1f}% retained ({retained_ml:g} of {injected_ml:g} mL); facial meta-analysis pooled "
        f"{pooled:g}% (95% CI {lo:g}-{hi:g}%), range {RETENTION_RANGE_FACE[0]:g}-"
        f"{RETENTION_RANGE_FACE[1]:g}% (Lv 2021); values depend on the measurement method",
        subscores=subscores,
        warnings=warnings,
    )


# --- registry used by the instrument engine ------------------------------------------------------


def _ice_from(values: Mapping[str, Any]) -> int | None:
    parts = [k for k in ICE_MAX if values.get(k) is not None]
    given = values.get("ice_score")
    if parts and len(parts) != len(ICE_MAX):
        missing = [k for k in ICE_MAX if values.get(k) is None]
        raise _fail("icans_astct", missing[0], "give all five ICE items or ice_score", ", ".join(ICE_MAX))
    if parts:
        total = ice_score(**{k: int(values[k]) for k in ICE_MAX})
        if given is not None and int(given) != total:
            raise _fail("icans_astct", "ice_score", f"{given} does not match the ICE items (total {total})")
        return total
    return int(given) if given is not None else None


ALGORITHMS: dict[str, Callable[[Mapping[str, Any]], AlgorithmResult]] = {
    "crs_astct": lambda v: crs_grade(
        temperature_c=float(v["temperature_c"]),
        hypotension=v.get("hypotension") or "none",
        oxygen=v.get("oxygen"),
        oxygen_flow_l_min=v.get("oxygen_flow_l_min"),
        fever_masked=bool(v.get("fever_masked")),
        death_from_crs=bool(v.get("death_from_crs")),
    ),
    "icans_astct": lambda v: icans_grade(
        ice=_ice_from(v),
        consciousness=v.get("consciousness") or "alert",
        seizure=v.get("seizure") or "none",
        motor=v.get("motor") or "none",
        raised_icp=v.get("raised_icp") or "none",
    ),
    "clavien_dindo": lambda v: clavien_dindo(str(v["grade"]), bool(v.get("disability"))),
    "ctcae": lambda v: ctcae_grade(str(v["term"]), v.get("grade"), v.get("impact")),
    "elastography": lambda v: elastography(
        v.get("shear_wave_speed_m_s"),
        v.get("youngs_modulus_kpa"),
        float(v.get("density_kg_m3") or DEFAULT_TISSUE_DENSITY),
    ),
    "hair_density": lambda v: hair_density(int(v["hair_count"]), float(v["area_cm2"]), v.get("baseline_density")),
    "dermal_thickness": lambda v: dermal_thickness(float(v["thickness_mm"]), v.get("baseline_mm"), v.get("probe_mhz")),
    "graft_retention": lambda v: graft_retention(float(v["injected_ml"]), float(v["retained_ml"]), v.get("method")),
}
