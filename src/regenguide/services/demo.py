"""The synthetic demo cohort: deterministic for a seed, realistic, documented (docs/demo-cohort.md).

`seed_demo(engine, patients=..., seed=...)` adds sites, the demo logins, site staff and `patients` synthetic
patients with their whole care pathway: assessment with a severity scale, treatment plan (signed or draft) with
planned injections and a `regenguide.plan/1` document, consent, autologous biologic products with custody
events and ISBT 128 / local identifiers, procedures (image-guided or landmark) with performed injections and
imaging references, follow-up visits by schedule with declining adherence and losses to follow-up,
observations (GAIS, graft volume retention, dermal thickness, hair density, CAR-T toxicity grades) and
adverse events.

Where the numbers come from. Every rate below says its source. "CK §x" is the project's cited research file
(clinical_knowledge.md, section x), which names the primary study. A rate marked ILLUSTRATIVE is an assumption
made so that the demo looks like a clinic, not a published fact: never quote a demo figure as evidence.

How it scales. Patients are generated in chunks of `CHUNK` patients; each chunk draws its random numbers in
whole arrays from its own generator (`numpy.random.default_rng([seed, chunk])`), builds plain row dicts with
ids computed in Python and inserts them with SQLAlchemy Core `insert()` executemany, then appends one audit
record per patient, all in one transaction per chunk. The same seed on a fresh database gives identical rows.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from sqlalchemy import JSON, Engine, Table, func, insert, select, text
from sqlalchemy.orm import Session

from regenguide.domain.plan import PLAN_SCHEMA
from regenguide.security import hash_password
from regenguide.store import models as m
from regenguide.store.audit import AuditRecord, append, canonical_json
from regenguide.store.db import transaction

DEMO_PASSWORD = "regenguide-demo"
DEMO_ROLES = ("admin", "clinician", "nurse", "lab", "researcher")
#: The cohort's "today": all dates are relative to it, so that a seed gives the same rows on any day.
DEMO_AS_OF = date(2026, 11, 1)
CHUNK = 2_000
AUDIT_USERNAME = "demo-seed"
#: Unusable password hash for staff records that are not logins (argon2 refuses to parse it).
NO_LOGIN = "!no-login"

#: Tables in insertion (foreign-key) order; `cohort_digest` reads them in this order too.
PATHWAY_TABLES: tuple[Table, ...] = tuple(
    m.Base.metadata.tables[name]
    for name in (
        "sites",
        "users",
        "patients",
        "assessments",
        "treatment_plans",
        "planned_injections",
        "consents",
        "biologic_products",
        "custody_events",
        "procedures",
        "performed_injections",
        "followup_visits",
        "imaging_studies",
        "observations",
        "adverse_events",
    )
)
_CHUNK_TABLES = PATHWAY_TABLES[2:]


# --------------------------------------------------------------------------------------------------
# Sites, staff and names
# --------------------------------------------------------------------------------------------------
Row = Sequence[float]  # one patient's (or session's, visit's) uniform or normal draws
Grid = Sequence[Sequence[float]]


@dataclass(frozen=True)
class SiteSpec:
    code: str  # short site code: MRN prefix and local product-id prefix
    name: str
    jurisdiction: str  # ISO 3166-1 alpha-2
    locale: str  # which built-in name list
    weight: float  # share of patients (ILLUSTRATIVE)
    fitzpatrick: tuple[float, ...]  # P(type I..VI) (ILLUSTRATIVE, by the region's population)
    fin: str | None  # ISBT 128 facility id; None = local identifiers (no ICCBBA licence)


# FINs below are FICTIONAL (shaped like ICCBBA FINs, never assigned to anyone): demo data only.
SITES: tuple[SiteSpec, ...] = (
    SiteSpec("BOS", "RegenGuide Demo Clinic Boston", "US", "en", 0.28, (0.10, 0.25, 0.25, 0.17, 0.13, 0.10), "A9991"),
    SiteSpec("BER", "RegenGuide Demo Klinik Berlin", "DE", "de", 0.14, (0.12, 0.45, 0.30, 0.10, 0.02, 0.01), "A9992"),
    SiteSpec("LYO", "RegenGuide Demo Clinique Lyon", "FR", "fr", 0.12, (0.10, 0.40, 0.33, 0.12, 0.03, 0.02), None),
    SiteSpec("LON", "RegenGuide Demo Clinic London", "GB", "en", 0.12, (0.14, 0.42, 0.28, 0.10, 0.04, 0.02), "A9993"),
    SiteSpec("BOM", "RegenGuide Demo Clinic Mumbai", "IN", "in", 0.20, (0.00, 0.02, 0.13, 0.45, 0.35, 0.05), None),
    SiteSpec("OSA", "RegenGuide Demo Clinic Osaka", "JP", "ja", 0.14, (0.00, 0.10, 0.45, 0.40, 0.05, 0.00), None),
)

NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "female": ("Emily", "Sarah", "Jessica", "Olivia", "Emma", "Hannah", "Grace", "Chloe", "Laura", "Megan",
                   "Rachel", "Sophie", "Amanda", "Lucy", "Natalie", "Rebecca", "Claire", "Victoria"),
        "male": ("James", "John", "Michael", "David", "Daniel", "Thomas", "William", "Matthew", "Andrew",
                 "Christopher", "Joseph", "Ryan", "Oliver", "Harry", "Samuel", "Benjamin", "Jack", "Robert"),
        "family": ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
                   "Clark", "Walker", "Wright", "Hughes", "Evans", "Thompson", "Robinson", "Lewis", "Hall",
                   "Green", "Baker", "Turner", "Carter", "Murphy", "Cooper"),
    },
    "de": {
        "female": ("Anna", "Lena", "Julia", "Katharina", "Sophie", "Laura", "Lea", "Sarah", "Hannah", "Marie",
                   "Johanna", "Franziska", "Sabine", "Claudia"),
        "male": ("Lukas", "Jonas", "Felix", "Maximilian", "Leon", "Paul", "Tobias", "Florian", "Stefan",
                 "Matthias", "Jan", "Sebastian", "Michael", "Andreas"),
        "family": ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
                   "Hoffmann", "Koch", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Braun", "Zimmermann"),
    },
    "fr": {
        "female": ("Camille", "Léa", "Manon", "Chloé", "Inès", "Sarah", "Julie", "Claire", "Élodie", "Amélie",
                   "Mathilde", "Pauline", "Céline", "Sophie"),
        "male": ("Lucas", "Hugo", "Louis", "Gabriel", "Arthur", "Jules", "Thomas", "Nicolas", "Julien",
                 "Antoine", "Mathieu", "Pierre", "Romain", "François"),
        "family": ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy",
                   "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "Fournier", "Girard", "Bonnet"),
    },
    "in": {
        "female": ("Priya", "Ananya", "Aditi", "Kavya", "Diya", "Isha", "Neha", "Pooja", "Shreya", "Meera",
                   "Lakshmi", "Anjali", "Sneha", "Divya"),
        "male": ("Aarav", "Vivaan", "Arjun", "Rohan", "Rahul", "Vikram", "Karan", "Amit", "Sanjay", "Aditya",
                 "Nikhil", "Siddharth", "Rajesh", "Anil"),
        "family": ("Sharma", "Patel", "Singh", "Kumar", "Gupta", "Iyer", "Reddy", "Nair", "Mehta", "Joshi",
                   "Desai", "Rao", "Kapoor", "Chopra", "Banerjee", "Menon", "Pillai", "Agarwal"),
    },
    "ja": {
        "female": ("Yui", "Aoi", "Hina", "Sakura", "Yuna", "Haruka", "Misaki", "Nanami", "Yuka", "Ayaka",
                   "Mai", "Emi", "Keiko", "Naomi"),
        "male": ("Haruto", "Sota", "Yuto", "Ren", "Takumi", "Kenta", "Daiki", "Shota", "Hiroshi", "Takeshi",
                 "Kazuki", "Ryota", "Kenji", "Yusuke"),
        "family": ("Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura",
                   "Kobayashi", "Kato", "Yoshida", "Yamada", "Sasaki", "Yamaguchi", "Matsumoto", "Inoue"),
    },
}

#: Per site: (role, how many). Staff are not logins (their password hash is unusable).
STAFF_PER_SITE = (("clinician", 3), ("nurse", 2), ("lab", 1))
DEMO_USER_NAMES = {
    "admin": "Demo Administrator",
    "clinician": "Dr Demo Clinician",
    "nurse": "Demo Nurse",
    "lab": "Demo Laboratory Technologist",
    "researcher": "Demo Researcher",
}


# --------------------------------------------------------------------------------------------------
# Programs: one per (modality, indication) with its regions, course and follow-up schedule
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegionSpec:
    region: str  # knowledge-base region code (kb/data/regions.yaml)
    p: float  # probability the plan includes it (ILLUSTRATIVE)
    paired: bool
    plane: str | None  # knowledge-base plane code (kb/data/planes.yaml)
    device: str | None
    gauge: int | None
    volume: tuple[float, float, float] | None  # (low, typical, high) mL per side, triangular draw
    bolus_ml: float | None = None
    needle_depth_mm: tuple[float, float] | None = None


@dataclass(frozen=True)
class VisitSpec:
    code: str
    label: str
    days: int = 0
    months: int = 0
    before: int = 7
    after: int = 7
    grace: int = 14


@dataclass(frozen=True)
class Program:
    key: str
    modality: str
    indication: str
    weight: float  # share of the cohort (ILLUSTRATIVE: no published case mix in CK)
    female: float  # share female (ILLUSTRATIVE)
    age: tuple[float, float, int, int]  # mean, sd, min, max (ILLUSTRATIVE)
    scales: tuple[str, ...]  # severity instrument codes (kb/data/outcomes/instruments.yaml)
    regions: tuple[RegionSpec, ...]
    sessions: int
    interval_weeks: float
    schedule: tuple[VisitSpec, ...]
    guided: float  # P(ultrasound guidance) (ILLUSTRATIVE)
    processing: tuple[str, ...]
    ae_rate: float  # adverse events per session, averaged over techniques (source in the program table)
    ae_types: tuple[tuple[str, float, int, int, str, int], ...]  # type, weight, grade lo, grade hi, related, days
    gais: tuple[float, ...] | None  # P(GAIS 1..5) at follow-up (ILLUSTRATIVE)
    surgical: bool = False  # harvest + reinjection in the same surgical procedure
    infusion: bool = False
    product_ml: tuple[float, float] | None = None


def _v(code: str, label: str, **kw: int) -> VisitSpec:
    return VisitSpec(code, label, **kw)


# Follow-up schedules as in the outcomes templates (kb/data/outcomes/schedules.yaml): their timings are
# RegenGuide expert opinion except the CAR-T day-100 / 6-month / yearly visits (CIBMTR Form 4100).
SCHED_FAT = (
    _v("w1", "1 week", days=7, before=2, after=4, grace=7),
    _v("m1", "1 month", months=1, before=7, after=7, grace=14),
    _v("m3", "3 months", months=3, before=14, after=14, grace=30),
    _v("m6", "6 months", months=6, before=30, after=30, grace=30),
    _v("m12", "12 months", months=12, before=30, after=30, grace=60),
)
SCHED_CELL = SCHED_FAT[:4] + tuple(
    _v(f"y{n}", f"Year {n}", months=12 * n, before=60, after=60, grace=60) for n in range(1, 6)
)
SCHED_SERIES = (  # PRP series and microneedling course: after the last session
    _v("m3", "3 months after last session", months=3, before=14, after=14, grace=30),
    _v("m6", "6 months after last session", months=6, before=30, after=30, grace=30),
)
SCHED_MN = SCHED_SERIES + (_v("m12", "12-month maintenance review", months=12, before=30, after=30, grace=60),)
SCHED_INFUSION = (
    _v("d7", "Day 7", days=7, before=1, after=2, grace=3),
    _v("d14", "Day 14", days=14, before=2, after=2, grace=5),
    _v("d28", "Day 28", days=28, before=3, after=3, grace=7),
    _v("d100", "Day 100", days=100, before=14, after=14, grace=30),
    _v("m6", "6 months", months=6, before=30, after=30, grace=30),
) + tuple(_v(f"y{n}", f"Year {n}", months=12 * n, before=60, after=60, grace=60) for n in range(1, 16))

# Face fat volumes (low, typical, high) mL per side: Shue 2018, 19 studies (CK §3.2). Lips: not in that table,
# ILLUSTRATIVE. Planes follow the safer planes of CK §1.1 (temple interfascial/deep, tear trough and upper
# nasolabial supraperiosteal, lips superficial).
_FACE_FAT = (
    RegionSpec("temple", 0.45, True, "interfascial", "cannula", 22, (2.0, 5.9, 10.0), 0.1),
    RegionSpec("midface", 0.75, True, "subcutaneous", "cannula", 22, (1.0, 1.4, 4.0), 0.1),
    RegionSpec("tear_trough", 0.35, True, "supraperiosteal", "cannula", 22, (0.3, 0.65, 1.0), 0.05),
    RegionSpec("nasolabial_fold", 0.5, True, "subcutaneous", "cannula", 22, (1.0, 2.8, 7.5), 0.1),
    RegionSpec("forehead", 0.25, False, "subcutaneous", "cannula", 22, (4.0, 6.5, 10.0), 0.1),
    RegionSpec("glabella", 0.12, False, "subdermal", "cannula", 22, (1.0, 1.4, 4.0), 0.05),
    RegionSpec("lips", 0.2, False, "subcutaneous", "cannula", 22, (1.0, 2.0, 3.0), 0.05),
    RegionSpec("chin", 0.3, False, "supraperiosteal", "cannula", 22, (1.0, 6.7, 20.0), 0.1),
    RegionSpec("mandible", 0.25, True, "subcutaneous", "cannula", 22, (4.0, 11.5, 27.0), 0.1),
)
# Microneedling needle depth (mm): forehead 0.25-0.5, cheeks 0.5-1.0, periorbital 0.2-0.3 (vendor charts,
# CK §5, secondary); acne scars 1.5 mm (Harris 2015 review, CK §5).
_MN = (
    RegionSpec("midface", 0.95, True, "intradermal", None, None, None, None, (1.0, 1.5)),
    RegionSpec("forehead", 0.5, False, "intradermal", None, None, None, None, (0.25, 0.5)),
    RegionSpec("chin", 0.35, False, "intradermal", None, None, None, None, (0.5, 1.0)),
    RegionSpec("tear_trough", 0.2, True, "intradermal", None, None, None, None, (0.2, 0.3)),
)
# PRP face: intradermal microdroplets, 30G; volumes per area ILLUSTRATIVE (IADVL facial table not extracted).
_PRP_FACE = (
    RegionSpec("midface", 0.9, True, "intradermal", "needle", 30, (0.5, 1.0, 2.0), 0.05),
    RegionSpec("tear_trough", 0.55, True, "intradermal", "needle", 30, (0.2, 0.5, 1.0), 0.02),
    RegionSpec("forehead", 0.45, False, "intradermal", "needle", 30, (0.5, 1.0, 2.0), 0.05),
    RegionSpec("perioral", 0.3, False, "intradermal", "needle", 30, (0.3, 0.7, 1.5), 0.05),
)
# PRP scalp: 5-7 mL per session, 2-4 mm deep (IADVL alopecia recommendations, CK §2.3).
_PRP_SCALP = (RegionSpec("scalp", 1.0, False, "subcutaneous", "needle", 30, (5.0, 6.0, 7.0), 0.1, (2.0, 4.0)),)
# Nanofat: intradermal through needles down to 27G (Tonnard 2013, CK §3.1); volumes ILLUSTRATIVE.
_NANOFAT = (
    RegionSpec("tear_trough", 0.7, True, "intradermal", "needle", 27, (0.5, 1.0, 2.0), 0.02),
    RegionSpec("perioral", 0.4, False, "intradermal", "needle", 27, (0.5, 1.0, 2.0), 0.02),
    RegionSpec("forehead", 0.35, False, "intradermal", "needle", 27, (0.5, 1.5, 3.0), 0.02),
    RegionSpec("glabella", 0.2, False, "intradermal", "needle", 27, (0.2, 0.5, 1.0), 0.02),
)
# Cell-assisted lipotransfer to the breast: mean 270 mL injected (Yoshimura, 40 patients, CK §3.1), through
# an 18G needle/cannula (Yoshimura harvest and reinjection, CK §3.1).
_CAL_BREAST = (RegionSpec("breast", 1.0, True, "subcutaneous", "cannula", 18, (100.0, 135.0, 200.0), 1.0),)
# Body contour deformity (microfat): volumes ILLUSTRATIVE.
_BODY_FAT = (
    RegionSpec("buttock", 0.45, True, "subcutaneous", "cannula", 14, (50.0, 120.0, 250.0), 1.0),
    RegionSpec("thigh", 0.45, True, "subcutaneous", "cannula", 14, (30.0, 80.0, 200.0), 1.0),
    RegionSpec("abdomen", 0.3, False, "subcutaneous", "cannula", 14, (20.0, 50.0, 120.0), 1.0),
)
# SVF into scars: volumes ILLUSTRATIVE.
_SVF_SCAR = (
    RegionSpec("midface", 0.6, True, "subdermal", "needle", 25, (0.5, 1.5, 3.0), 0.05),
    RegionSpec("chin", 0.3, False, "subdermal", "needle", 25, (0.5, 1.0, 2.0), 0.05),
    RegionSpec("forehead", 0.3, False, "subdermal", "needle", 25, (0.5, 1.0, 2.0), 0.05),
)
_SVF_BODY = (
    RegionSpec("thigh", 0.5, True, "subcutaneous", "cannula", 18, (2.0, 5.0, 10.0), 0.5),
    RegionSpec("buttock", 0.4, True, "subcutaneous", "cannula", 18, (2.0, 5.0, 10.0), 0.5),
    RegionSpec("abdomen", 0.4, False, "subcutaneous", "cannula", 18, (2.0, 5.0, 10.0), 0.5),
)

# Adverse-event types: (term, weight within the program, CTCAE grade lo, hi, relatedness, typical days from
# procedure to onset). Terms are the adverse-event taxonomy's (regenguide.outcomes.adverse_events); the split
# between types is ILLUSTRATIVE.
_AE_FAT = (
    ("oil_cyst", 0.3, 1, 2, "probable", 60),
    ("contour_irregularity", 0.3, 1, 2, "probable", 45),
    ("oedema", 0.25, 1, 1, "certain", 2),
    ("infection", 0.1, 2, 3, "probable", 5),
    ("haematoma", 0.05, 1, 2, "certain", 1),
)
_AE_PRP = (
    ("pain", 0.5, 1, 1, "certain", 0),
    ("bruising", 0.35, 1, 1, "certain", 0),
    ("oedema", 0.15, 1, 1, "certain", 0),
)
_AE_MN = (
    ("erythema", 0.7, 1, 1, "certain", 1),
    ("oedema", 0.2, 1, 1, "certain", 1),
    ("infection", 0.1, 2, 2, "possible", 4),
)
_AE_SVF = (
    ("donor_site_complication", 0.4, 1, 2, "certain", 1),
    ("oedema", 0.4, 1, 1, "certain", 1),
    ("infection", 0.2, 2, 3, "possible", 5),
)
_AE_HSCT = (("cytopenia", 1.0, 3, 4, "probable", 7),)
# CRS and ICANS are graded on the ASTCT scales (CK §6).
_AE_CART = (("crs", 0.7, 1, 4, "certain", 3), ("icans", 0.3, 1, 4, "certain", 6))

PROGRAMS: tuple[Program, ...] = (
    Program("prp_face", "prp", "facial_rejuvenation", 0.17, 0.88, (44, 10, 25, 72), ("glogau",), _PRP_FACE,
            # 3 monthly sessions: typical design of facial PRP trials (CK §2.3).
            3, 4, SCHED_SERIES, 0.3, ("double_spin", "single_spin"),
            0.04, _AE_PRP, (0.08, 0.30, 0.40, 0.20, 0.02), product_ml=(3.0, 5.0)),
    Program("prp_scalp", "prp", "androgenetic_alopecia", 0.17, 0.4, (36, 9, 20, 65), ("norwood_hamilton", "ludwig"),
            # >= 3-5 sessions one month apart (IADVL, CK §2.3); we draw 3-5 below.
            _PRP_SCALP, 4, 4, SCHED_SERIES, 0.05, ("double_spin",),
            0.04, _AE_PRP, (0.05, 0.20, 0.35, 0.37, 0.03), product_ml=(5.0, 7.0)),
    Program("microfat_face", "microfat", "facial_volume_loss", 0.15, 0.86, (47, 10, 25, 75), ("glogau", "wsrs"),
            _FACE_FAT, 1, 5, SCHED_FAT, 0.6, ("centrifugation_1200g", "cotton_pad_filtration", "sedimentation"),
            # Face fat grafting: overall complication rate 6% (Groen 2017, CK §3.3).
            0.06, _AE_FAT, (0.20, 0.35, 0.30, 0.13, 0.02), surgical=True),
    Program("microfat_body", "microfat", "soft_tissue_reconstruction", 0.05, 0.8, (41, 11, 20, 70), ("vss",),
            _BODY_FAT, 1, 5, SCHED_FAT, 0.5, ("centrifugation_1200g",),
            0.06, _AE_FAT, (0.15, 0.35, 0.35, 0.13, 0.02), surgical=True),  # 6%: Groen 2017 (face), applied
    Program("nanofat", "nanofat", "periorbital_dark_circles", 0.09, 0.85, (42, 9, 25, 70), ("glogau",),
            _NANOFAT, 1, 5, SCHED_FAT, 0.4, ("emulsification_filtration",),
            0.06, _AE_FAT, (0.10, 0.30, 0.40, 0.18, 0.02), surgical=True),  # 6%: Groen 2017 (face fat)
    Program("cal_breast", "cal", "soft_tissue_reconstruction", 0.04, 1.0, (40, 9, 22, 65), ("vss",),
            # 4 of 40 CAL breast patients had cysts or calcification (Yoshimura, CK §3.1): 10%.
            _CAL_BREAST, 1, 5, SCHED_FAT, 0.5, ("svf_enriched",),
            0.10, (("oil_cyst", 0.6, 1, 2, "probable", 90), ("calcification", 0.4, 1, 1, "probable", 180)),
            (0.20, 0.35, 0.30, 0.13, 0.02), surgical=True),
    Program("svf_scar", "svf_mechanical", "scars", 0.04, 0.6, (35, 10, 18, 70), ("posas_observer", "vss"),
            _SVF_SCAR, 1, 5, SCHED_CELL, 0.5, ("mechanical_emulsification",),
            0.06, _AE_SVF, (0.10, 0.30, 0.40, 0.18, 0.02), surgical=True),  # ILLUSTRATIVE (no SVF AE rate in CK)
    Program("svf_enzymatic", "svf_enzymatic", "soft_tissue_reconstruction", 0.03, 0.7, (42, 11, 20, 70), ("vss",),
            _SVF_BODY, 1, 5, SCHED_CELL, 0.5, ("collagenase_digestion",),
            0.06, _AE_SVF, (0.10, 0.30, 0.40, 0.18, 0.02), surgical=True),  # ILLUSTRATIVE
    Program("microneedling", "microneedling", "acne_scars", 0.14, 0.55, (29, 7, 18, 55), ("posas_observer",),
            # Median 3 sessions at 4-week intervals, 1.5 mm (Harris 2015, CK §5).
            _MN, 3, 4, SCHED_MN, 0.0, ("dermal_roller",),
            0.05, _AE_MN, (0.08, 0.30, 0.42, 0.18, 0.02)),  # ILLUSTRATIVE rate
    Program("hsct", "hsct_autologous", "hematologic_malignancy", 0.02, 0.4, (57, 10, 25, 72), (),
            (), 1, 4, SCHED_INFUSION, 0.0, ("apheresis_cryopreserved",),
            0.5, _AE_HSCT, None, infusion=True, product_ml=(100.0, 250.0)),  # ILLUSTRATIVE rate
    Program("car_t", "car_t", "hematologic_malignancy", 0.015, 0.4, (60, 10, 25, 78), (),
            (), 1, 4, SCHED_INFUSION, 0.0, ("manufactured_cryopreserved",),
            0.75, _AE_CART, None, infusion=True, product_ml=(20.0, 70.0)),  # ILLUSTRATIVE rate
)
FAT_RETENTION_PROGRAMS = frozenset({"microfat_face", "microfat_body", "cal_breast"})

# Fat graft volume retention at 12 months: facial meta-analysis pooled 47%, range 26-83% (Lv 2021, CK §3.3).
# Drawn from a Beta with mean 0.47 and sd 0.12 (the sd is ILLUSTRATIVE), clipped to the published 26-83%.
# SVF-enriched grafts (CAL): 63% vs 39% at 1 year (PMC4494476, CK §3.3) -> mean 0.63, same clipping.
RETENTION_MEAN = {"microfat_face": 0.47, "microfat_body": 0.47, "cal_breast": 0.63}
RETENTION_SD = 0.12
RETENTION_RANGE = (0.26, 0.83)
# Retention measured earlier is higher: 1-month vs 12-month 49/41, 41/34, 37/31 (Wu 2018, CK §3.3): ratio ~1.2.
# Values between are interpolated [derived]. Visit code -> multiplier of the 12-month retention.
RETENTION_BY_VISIT = {"m1": 1.20, "m3": 1.10, "m6": 1.04, "m12": 1.0}

# Technique. Adverse events more often with landmark than image-guided technique: ILLUSTRATIVE ASSUMPTION
# (no comparative rate in CK), relative risk 1.5, calibrated so that the program's average stays at its rate.
LANDMARK_RR = 1.5
# Intravascular fat injection (face fat grafting; fat is the leading cause of filler blindness: 47% of 190
# cases, Chatrath 2019, CK §1.3). Incidence per session is not published in CK: 1 in 10,000 is ILLUSTRATIVE,
# x3 without imaging (ILLUSTRATIVE). 72% of such events showed no improvement (Sito 2019, CK §1.3).
VASCULAR_RATE = 1e-4
VASCULAR_LANDMARK_RR = 3.0
VASCULAR_NOT_RECOVERED = 0.72

# Pathway rates, all ILLUSTRATIVE (clinic operations; nothing in CK).
P_PLAN_DRAFT = 0.10
P_PLAN_CANCELLED = 0.02
P_CONSENT_DECLINED = 0.03
P_CONSENT_WITHDRAWN = 0.02  # after the first session of a series
P_RESEARCH_USE = 0.6  # of accepted consents
P_NEXT_SESSION = 0.92  # patient comes back for the next session of a series
P_GUIDANCE_DEVIATION = 0.05  # procedure done with a different technique than planned
P_DOPPLER = 0.8  # of ultrasound-guided facial work
P_QC_FAILED = 0.01  # product fails QC and is discarded; a second collection is used
# Follow-up adherence: each visit, the patient is lost for good with P_LOSS (P_LOSS_INFUSION for transplant and
# CAR-T patients, who are followed by their transplant centre) and otherwise misses it with P_MISS; visits
# still in their window are completed by then with P_EARLY. Together: completion declines with time.
P_LOSS = 0.08
P_LOSS_INFUSION = 0.03
P_MISS = 0.10
P_CANCEL_VISIT = 0.01
P_EARLY = 0.5
P_SMOKER = 0.12
P_PHONE = 0.85
P_EMAIL = 0.7


# --------------------------------------------------------------------------------------------------
# Summary and digest
# --------------------------------------------------------------------------------------------------
@dataclass
class DemoSummary:
    patients: int
    seed: int
    sites: int
    users_created: int
    rows: dict[str, int] = field(default_factory=dict)
    first_patient_id: int | None = None
    last_patient_id: int | None = None

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def __str__(self) -> str:
        return (
            f"{self.patients:,} patients (seed {self.seed}) at {self.sites} sites, "
            f"{self.total_rows:,} rows, {self.users_created} new users"
        )


def cohort_digest(engine: Engine) -> str:
    """SHA-256 over every pathway row (all tables in `PATHWAY_TABLES`, by id), leaving out what legitimately
    differs between two loads of one seed: `created_at` / `updated_at` and password hashes (salted)."""
    h = hashlib.sha256()
    with engine.connect() as conn:
        for table in PATHWAY_TABLES:
            cols = [c for c in table.c if c.name not in ("created_at", "updated_at", "password_hash")]
            h.update(table.name.encode())
            for row in conn.execute(select(*cols).order_by(table.c[_pk(table)])):
                h.update(canonical_json([_norm(v) for v in row]).encode())
    return h.hexdigest()


def _pk(table: Table) -> str:
    return next(iter(table.primary_key.columns)).name


def _norm(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 9)
    return value


# --------------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------------
@dataclass
class _SiteRef:
    spec: SiteSpec
    id: int
    clinicians: list[int]
    nurses: list[int]
    labs: list[int]


def seed_demo(
    engine: Engine,
    *,
    patients: int = 200,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
    as_of: date = DEMO_AS_OF,
) -> DemoSummary:
    """Add the demo sites and logins (skipping those that exist) and `patients` synthetic patients.

    Deterministic: the same seed on a fresh database gives identical rows (see `cohort_digest`); `as_of`
    is the cohort's "today". `progress(n)` is called after each committed chunk with the number of patients
    that chunk added (an increment, as a progress bar's `advance`).
    """
    if patients < 0:
        raise ValueError("patients must be >= 0")
    with transaction(engine) as db:
        sites, users_created = _ensure_sites_and_users(db)
        counters = _product_counters(db)
    summary = DemoSummary(patients=patients, seed=seed, sites=len(sites), users_created=users_created)
    totals: Counter[str] = Counter()
    for chunk, start in enumerate(range(0, patients, CHUNK)):
        n = min(CHUNK, patients - start)
        with transaction(engine) as db:
            if engine.dialect.name == "postgresql":
                # Ids are computed here, not drawn from sequences: keep concurrent writers out until commit
                # (reads go on). SQLite's BEGIN IMMEDIATE already holds the write lock.
                names = ", ".join(t.name for t in _CHUNK_TABLES)
                db.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
            next_ids = {t.name: _next_id(db, t) for t in _CHUNK_TABLES}
            gen = _ChunkGenerator(np.random.default_rng([seed, chunk]), sites, next_ids, counters, as_of)
            rows, audit_records = gen.generate(n)
            for table in _CHUNK_TABLES:
                batch = rows[table.name]
                if batch:
                    _bulk_insert(db, table, batch)
                    totals[table.name] += len(batch)
            for i in range(0, len(audit_records), 5_000):
                append(db, audit_records[i : i + 5_000])
            if engine.dialect.name == "postgresql":
                for table in _CHUNK_TABLES:
                    _sync_sequence(db, table)
            if summary.first_patient_id is None and rows["patients"]:
                summary.first_patient_id = rows["patients"][0]["id"]
            if rows["patients"]:
                summary.last_patient_id = rows["patients"][-1]["id"]
        if progress is not None:
            progress(n)
    summary.rows = dict(totals)
    return summary


def _bulk_insert(db: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows (all with the same keys) in the session's transaction, as fast as the driver allows.

    PostgreSQL: `COPY ... FROM STDIN` (psycopg 3), an order of magnitude faster than executemany.
    SQLite: the DB-API `executemany` with SQLAlchemy's own bind processors per column, so the stored text of
    dates, datetimes and JSON is exactly what SQLAlchemy would write. Anything else: Core `insert()`.
    """
    conn = db.connection()
    dialect = conn.dialect
    cols = list(rows[0])
    dbapi_conn = conn.connection.dbapi_connection
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        json_cols = {c.name for c in table.c if isinstance(c.type, JSON)}
        quoted = ", ".join(dialect.identifier_preparer.quote(c) for c in cols)
        sql = f"COPY {dialect.identifier_preparer.format_table(table)} ({quoted}) FROM STDIN"
        with dbapi_conn.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row([json.dumps(row[c]) if c in json_cols and row[c] is not None else row[c]
                                for c in cols])
        return
    if dialect.name == "sqlite":
        procs = [table.c[c].type.bind_processor(dialect) for c in cols]
        names = ", ".join(dialect.identifier_preparer.quote(c) for c in cols)
        marks = ", ".join("?" * len(cols))
        sql = f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({names}) VALUES ({marks})"
        data = [tuple(p(row[c]) if p is not None else row[c] for c, p in zip(cols, procs, strict=True))
                for row in rows]
        cur = dbapi_conn.cursor()  # type: ignore[union-attr]
        try:
            cur.executemany(sql, data)
        finally:
            cur.close()
        return
    db.execute(insert(table), rows)


def _next_id(db: Session, table: Table) -> int:
    return int(db.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()) + 1


def _sync_sequence(db: Session, table: Table) -> None:
    db.execute(
        text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), (SELECT max(id) FROM {table.name}))")
    )


def _ensure_sites_and_users(db: Session) -> tuple[list[_SiteRef], int]:
    created = 0
    site_ids: dict[str, int] = {}
    for spec in SITES:
        sid = db.execute(select(m.Site.id).where(m.Site.name == spec.name)).scalar_one_or_none()
        if sid is None:
            site = m.Site(name=spec.name, jurisdiction=spec.jurisdiction)
            db.add(site)
            db.flush()
            sid = site.id
            append(db, AuditRecord(AUDIT_USERNAME, "create", "sites", sid, None, None,
                                   {"name": spec.name, "jurisdiction": spec.jurisdiction}))
        site_ids[spec.code] = sid

    def ensure_user(username: str, role: str, full_name: str, site_id: int, password_hash: str | None) -> int:
        nonlocal created
        uid = db.execute(select(m.User.id).where(m.User.username == username)).scalar_one_or_none()
        if uid is not None:
            return int(uid)
        user = m.User(username=username, role=role, full_name=full_name, site_id=site_id,
                      password_hash=password_hash or hash_password(DEMO_PASSWORD), active=True)
        db.add(user)
        db.flush()
        created += 1
        append(db, AuditRecord(AUDIT_USERNAME, "create", "users", user.id, None, None,
                               {"username": username, "role": role, "site_id": site_id}))
        return user.id

    home = site_ids[SITES[0].code]
    for role in DEMO_ROLES:  # the documented demo logins: one per role
        ensure_user(role, role, DEMO_USER_NAMES[role], home, None)
    refs: list[_SiteRef] = []
    for s_index, spec in enumerate(SITES):
        names = NAMES[spec.locale]
        staff: dict[str, list[int]] = {"clinician": [], "nurse": [], "lab": []}
        k = 0
        for role, count in STAFF_PER_SITE:
            for i in range(count):
                k += 1
                pool = names["female"] if (k + s_index) % 2 else names["male"]
                given = pool[(3 * k + s_index) % len(pool)]
                family = names["family"][(5 * k + 2 * s_index) % len(names["family"])]
                title = "Dr " if role == "clinician" else ""
                username = f"{spec.code.lower()}-{role}-{i + 1}"
                staff[role].append(ensure_user(username, role, f"{title}{given} {family}", site_ids[spec.code],
                                               NO_LOGIN))
        refs.append(_SiteRef(spec, site_ids[spec.code], staff["clinician"], staff["nurse"], staff["lab"]))
    return refs, created


def _product_counters(db: Session) -> dict[str, int]:
    """Last sequence number used per (FIN or site code, 2-digit year), from identifiers already stored."""
    counters: dict[str, int] = {}
    prefixes = tuple(s.fin or s.code for s in SITES)
    for ident in db.execute(select(m.BiologicProduct.identifier)).scalars():
        raw = ident.split("/")[0].replace("-", "")
        for prefix in prefixes:
            rest = raw[len(prefix) :]
            if raw.startswith(prefix) and len(rest) == 8 and rest.isdigit():
                key = f"{prefix}/{rest[:2]}"
                counters[key] = max(counters.get(key, 0), int(rest[2:]))
    return counters


def _product_identifier(spec: SiteSpec, year: int, counters: dict[str, int]) -> tuple[str, str]:
    prefix = spec.fin or spec.code
    key = f"{prefix}/{year % 100:02d}"
    seq = counters.get(key, 0) + 1
    if seq > 999_999:
        raise OverflowError(f"product sequence numbers for {key} are exhausted")
    counters[key] = seq
    try:  # prefer the products module's generators (ISBT 128 DIN with MOD 37-2 check, local ids)
        from regenguide.products.din import new_din, new_local_id

        ident = new_din(spec.fin, year % 100, seq) if spec.fin else new_local_id(spec.code, year % 100, seq)
        return ident.value, ident.scheme.value
    except ImportError:  # pragma: no cover - the products module ships with the package
        if spec.fin:
            return f"{spec.fin}{year % 100:02d}{seq:06d}", "isbt128"
        return f"{spec.code}-{year % 100:02d}-{seq:06d}", "local"


def _add_months(d: date, months: int) -> date:
    y, mo = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, mo + 1
    if d.day <= 28:
        return date(year, month, d.day)
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _at(d: date, minutes: float) -> datetime:
    return datetime.combine(d, time(0, 0), tzinfo=UTC) + timedelta(minutes=float(minutes))


def _ascii(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().lower()


def _uid(*parts: object) -> str:
    """A DICOM UID under the UUID-derived root 2.25 (deterministic from `parts`)."""
    n = int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:16], "big")
    return f"2.25.{n}"


CONSENT_TEMPLATES = {
    "prp": "Platelet-rich plasma: a sample of my blood is drawn, concentrated and injected into the treated areas.",
    "microfat": "Fat grafting: fat is harvested by liposuction, processed and injected into the treated areas.",
    "nanofat": "Nanofat grafting: harvested fat is emulsified and filtered, then injected into the skin.",
    "cal": "Cell-assisted lipotransfer: part of the harvested fat is processed to stromal vascular fraction and "
    "recombined with the graft.",
    "svf_mechanical": "Stromal vascular fraction (mechanical): harvested fat is mechanically processed and injected.",
    "svf_enzymatic": "Stromal vascular fraction (enzymatic): harvested fat is digested with collagenase; the cells "
    "are injected. This is more than minimal manipulation in several jurisdictions.",
    "microneedling": "Microneedling: the skin is punctured with fine needles to a set depth.",
    "hsct_autologous": "Autologous haematopoietic stem cell transplantation: my stem cells are collected by "
    "apheresis, frozen and given back after high-dose chemotherapy.",
    "car_t": "CAR-T cell therapy: my T cells are collected, genetically modified and infused; long-term follow-up "
    "for up to 15 years is required.",
}
CONSENT_COMMON = (
    " Risks explained to me include bruising, swelling, infection, asymmetry, the need for further sessions and, "
    "rarely, injury to blood vessels. Image guidance (ultrasound/Doppler) is used where planned. I may withdraw "
    "at any time."
)
CONSENT_VERSION = "2026.1"


class _ChunkGenerator:
    """Builds the rows of one chunk of patients from one generator; ids continue from `next_ids`."""

    def __init__(
        self,
        rng: np.random.Generator,
        sites: Sequence[_SiteRef],
        next_ids: dict[str, int],
        counters: dict[str, int],
        as_of: date,
    ) -> None:
        self.rng = rng
        self.sites = sites
        self.ids = dict(next_ids)
        self.counters = counters
        self.as_of = as_of
        self.rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in _CHUNK_TABLES}

    def _id(self, table: str) -> int:
        value = self.ids[table]
        self.ids[table] = value + 1
        return value

    def _add(self, table: str, row: dict[str, Any]) -> int:
        row_id = self._id(table)
        row["id"] = row_id
        self.rows[table].append(row)
        return row_id

    # ------------------------------------------------------------------------------------------
    def generate(self, n: int) -> tuple[dict[str, list[dict[str, Any]]], list[AuditRecord]]:
        rng = self.rng
        n_prog, n_site = len(PROGRAMS), len(SITES)
        weights = np.array([p.weight for p in PROGRAMS])
        prog = rng.choice(n_prog, size=n, p=weights / weights.sum())
        site_w = np.array([s.weight for s in SITES])
        site = rng.choice(n_site, size=n, p=site_w / site_w.sum())
        female = rng.random(n) < np.array([p.female for p in PROGRAMS])[prog]
        age_mean = np.array([p.age[0] for p in PROGRAMS])[prog]
        age_sd = np.array([p.age[1] for p in PROGRAMS])[prog]
        age = np.clip(
            rng.normal(age_mean, age_sd),
            np.array([p.age[2] for p in PROGRAMS])[prog],
            np.array([p.age[3] for p in PROGRAMS])[prog],
        ).astype(int)
        fitz_cum = np.cumsum(np.array([s.fitzpatrick for s in SITES]), axis=1)
        fitz = 1 + (rng.random(n)[:, None] > fitz_cum[site]).sum(axis=1)
        fitz = np.minimum(fitz, 6)
        name_u = rng.integers(0, 1 << 30, size=(n, 2))
        birth_shift = rng.integers(0, 365, size=n)
        # Plans over the three years before `as_of` (ILLUSTRATIVE), drafts in the weeks ahead.
        plan_back = rng.integers(-30, 3 * 365, size=n)
        u = rng.random((n, 24))  # per-patient uniforms, one column per decision (see `_patient`)
        z = rng.normal(size=(n, 8))
        region_u = rng.random((n, 12, 4))  # include, volume, side, spare
        session_u = rng.random((n, 6, 20))  # per session; columns documented where used
        visit_u = rng.random((n, len(SCHED_INFUSION), 6))
        visit_z = rng.normal(size=(n, len(SCHED_INFUSION)))
        retention = np.zeros(n)
        for key, mean in RETENTION_MEAN.items():
            var = RETENTION_SD**2
            k = mean * (1 - mean) / var - 1
            draws = rng.beta(mean * k, (1 - mean) * k, size=n)
            sel = np.array([PROGRAMS[i].key == key for i in prog])
            retention[sel] = np.clip(draws[sel], *RETENTION_RANGE)
        audit: list[AuditRecord] = []
        # Plain Python numbers from here on: same values, much faster to index and compare than numpy scalars.
        cols = [a.tolist() for a in (prog, site, female, age, fitz, name_u, birth_shift, plan_back, u, z, region_u,
                                     session_u, visit_u, visit_z, retention)]
        for i in range(n):
            (p_i, s_i, f_i, a_i, fz_i, nu_i, bs_i, pb_i, u_i, z_i, ru_i, su_i, vu_i, vz_i, r_i) = (c[i] for c in cols)
            pid = self._patient(
                PROGRAMS[p_i], self.sites[s_i], bool(f_i), int(a_i), int(fz_i), nu_i, int(bs_i), int(pb_i),
                u_i, z_i, ru_i, su_i, vu_i, vz_i, float(r_i),
            )
            row = self.rows["patients"][-1]
            audit.append(AuditRecord(AUDIT_USERNAME, "create", "patients", pid, pid, None,
                                     {k: v for k, v in row.items() if k != "version"}))
        return self.rows, audit

    # ------------------------------------------------------------------------------------------
    def _patient(
        self,
        prog: Program,
        site: _SiteRef,
        female: bool,
        age: int,
        fitz: int,
        name_u: Sequence[int],
        birth_shift: int,
        plan_back: int,
        u: Row,
        z: Row,
        region_u: Grid,
        session_u: Grid,
        visit_u: Grid,
        visit_z: Row,
        retention12: float,
    ) -> int:
        as_of, spec = self.as_of, site.spec
        names = NAMES[spec.locale]
        pool = names["female" if female else "male"]
        given = pool[int(name_u[0]) % len(pool)]
        family = names["family"][int(name_u[1]) % len(names["family"])]
        pid = self.ids["patients"]
        birth = as_of - timedelta(days=int(age * 365.25) + birth_shift)
        clinician = site.clinicians[int(u[0] * len(site.clinicians))]
        nurse = site.nurses[int(u[1] * len(site.nurses))]
        lab = site.labs[int(u[2] * len(site.labs))]
        # --- plan status and dates --------------------------------------------------------------
        status = "draft" if u[3] < P_PLAN_DRAFT else "cancelled" if u[3] < P_PLAN_DRAFT + P_PLAN_CANCELLED else "signed"
        planned_on = as_of - timedelta(days=plan_back)
        if status == "draft":
            planned_on = as_of + timedelta(days=7 + int(u[4] * 53))
        assessed_on = min(planned_on, as_of) - timedelta(days=7 + int(u[5] * 38))
        consent_decision: str | None = None
        if status == "signed":
            consent_decision = "declined" if u[6] < P_CONSENT_DECLINED else "accepted"
        research_use = bool(consent_decision == "accepted" and u[7] < P_RESEARCH_USE)
        smoker = bool(u[8] < P_SMOKER)
        patient = {
            "site_id": site.id,
            "mrn": f"{spec.code}{pid:08d}",
            "given_name": given,
            "family_name": family,
            "birth_date": birth,
            "phone": _phone(spec.jurisdiction, pid) if u[9] < P_PHONE else None,
            "email": f"{_ascii(given)}.{_ascii(family)}.{pid}@example.org" if u[10] < P_EMAIL else None,
            "sex": "female" if female else "male",
            "fitzpatrick": fitz,
            "research_consent": research_use,
            "serious_event_flag": False,
            "version": 1,
        }
        self._add("patients", patient)
        # --- assessment ----------------------------------------------------------------------
        scale, score = _severity(prog, female, age, u[11])
        guided_plan = bool(prog.guided > 0 and u[12] < prog.guided)
        imaging = "ultrasound" if guided_plan else "none"
        face = any(r.region not in ("scalp", "breast", "buttock", "thigh", "abdomen") for r in prog.regions)
        doppler = bool(guided_plan and face and u[13] < P_DOPPLER)
        assessment_id = self._add("assessments", {
            "patient_id": pid,
            "assessed_on": assessed_on,
            "indication": prog.indication,
            "severity_scale": scale,
            "severity_score": score,
            "contraindications": [],
            "imaging_findings": ("Pre-procedure ultrasound mapping" + (" with Doppler" if doppler else "")
                                 + ": no vessel in the planned paths.") if guided_plan else None,
            "clinician_id": clinician,
            "notes": f"Demo assessment for {prog.indication.replace('_', ' ')}.",
            "version": 1,
        })
        baseline_obs: list[tuple[str, float, str | None]] = []
        if scale is not None and score is not None:
            baseline_obs.append((scale, score, "{score}"))
        dermal0 = float(np.clip(1.6 + 0.25 * z[0], 0.9, 2.6))  # ILLUSTRATIVE baseline dermis (mm)
        hair0 = float(np.clip(130 + 25 * z[1], 60, 220))  # ILLUSTRATIVE baseline hairs/cm2
        if prog.key in ("prp_face", "microneedling", "nanofat", "svf_scar"):
            baseline_obs.append(("dermal_thickness_us", round(dermal0, 2), "mm"))
        if prog.key == "prp_scalp":
            baseline_obs.append(("hair_density", round(hair0, 1), "/cm2"))
        for code, value, unit in baseline_obs:
            self._add("observations", _obs(pid, code, value, unit, _at(assessed_on, 600 + 30 * u[14]),
                                           clinician, assessment_id=assessment_id))
        # --- plan with planned injections ----------------------------------------------------
        injections = self._planned(prog, region_u)
        sessions = prog.sessions
        if prog.key == "prp_scalp":
            sessions = 3 + int(u[15] * 3)  # 3-5 (IADVL, CK §2.3)
        signed_at = None
        if status == "signed":
            sign_day = min(planned_on - timedelta(days=1 + int(u[16] * 10)), as_of)
            signed_at = _at(max(sign_day, assessed_on), 540 + 480 * u[17])
        processing = prog.processing[int(u[18] * len(prog.processing))]
        plan_id = self.ids["treatment_plans"]
        consent_doc: dict[str, Any] | None = None
        consent_signed: datetime | None = None
        if consent_decision is not None and signed_at is not None:
            consent_signed = signed_at + timedelta(minutes=20 + 40 * float(u[19]))
            consent_doc = {
                "status": "signed" if consent_decision == "accepted" else "declined",
                "signed_on": consent_signed.date().isoformat(),
                "version": f"{prog.modality}-{CONSENT_VERSION}",
            }
            if not prog.infusion:
                consent_doc["expires_on"] = (consent_signed.date() + timedelta(days=365)).isoformat()
        document = _plan_document(prog, spec, female, age, fitz, smoker, imaging, doppler, injections, sessions,
                                  planned_on, consent_doc, z)
        self._add("treatment_plans", {
            "patient_id": pid,
            "assessment_id": assessment_id,
            "modality": prog.modality,
            "indication": prog.indication,
            "jurisdiction": spec.jurisdiction,
            "guidance_imaging": imaging,
            "doppler": doppler,
            "status": status,
            "planned_on": planned_on,
            "document": document,
            "latest_check": None,
            "signed_by": clinician if status == "signed" else None,
            "signed_at": signed_at,
            "created_by": clinician,
            "version": 1,
        })
        for seq, inj in enumerate(injections, start=1):
            self._add("planned_injections", {"plan_id": plan_id, "seq": seq, **inj})
        # --- consent -------------------------------------------------------------------------
        if consent_decision is not None and consent_signed is not None:
            body = CONSENT_TEMPLATES[prog.modality] + CONSENT_COMMON
            self._add("consents", {
                "patient_id": pid,
                "plan_id": plan_id,
                "version": f"{prog.modality}-{CONSENT_VERSION}",
                "text": body,
                "text_digest": hashlib.sha256(body.encode()).hexdigest(),
                "decision": consent_decision,
                "signer_name": f"{given} {family}",
                "signer_role": "patient",
                "signed_at": consent_signed,
                "expires_on": None if prog.infusion else consent_signed.date() + timedelta(days=365),
                "research_use": research_use,
                "recorded_by": nurse,
            })
        if consent_decision != "accepted":
            return pid
        # --- sessions: products, procedures, injections, imaging, adverse events ---------------
        withdraw_after_first = bool(sessions > 1 and u[20] < P_CONSENT_WITHDRAWN)
        last_proc: tuple[int, date, int, str | None] | None = None
        for s in range(sessions):
            su = session_u[s]
            jitter = int(su[0] * 10) - 3 if s else 0  # later sessions -3..+6 days around the interval
            day = planned_on + timedelta(days=int(round(s * prog.interval_weeks * 7)) + jitter)
            if day > as_of:
                break
            if s > 0 and (su[1] > P_NEXT_SESSION or withdraw_after_first):
                break
            guided = bool(guided_plan != (su[2] < P_GUIDANCE_DEVIATION)) if prog.guided > 0 else False
            start_min = 8 * 60 + su[3] * 8 * 60
            performed_at = _at(day, start_min)
            product_id, lot = None, None
            if prog.modality != "microneedling":
                product_id, lot = self._product(prog, site, pid, plan_id, day, start_min, su, nurse, lab,
                                                processing, sum(i["volume_ml"] or 0 for i in injections))
            proc_id = self._add("procedures", {
                "patient_id": pid,
                "plan_id": plan_id,
                "modality": prog.modality,
                "performed_at": performed_at,
                "performer_id": clinician,
                "guidance_imaging": "ultrasound" if guided else "none",
                "doppler": guided and doppler,
                "session_number": s + 1,
                "processing_method": processing,
                "notes": ("Ultrasound-guided" if guided else "Landmark technique") + f"; session {s + 1} of "
                f"{sessions}." if not prog.infusion else "Intravenous infusion via central line.",
                "version": 1,
            })
            self._performed(prog, proc_id, product_id, injections, su)
            if guided:
                region = injections[0]["region"] if injections else None
                study = _uid("study", proc_id, pid)
                sop = _uid("sop", proc_id, pid)
                self._add("imaging_studies", {
                    "patient_id": pid,
                    "procedure_id": proc_id,
                    "visit_id": None,
                    "study_uid": study,
                    "sop_instance_uid": sop,
                    "modality": "US",
                    "storage_path": f"demo/{study}/{sop}.dcm",
                    "sha256": hashlib.sha256(sop.encode()).hexdigest(),
                    "frames": 1 + int(su[16] * 120),
                    "calibrated": True,
                    "acquired_at": performed_at + timedelta(minutes=70 if prog.surgical else 5),
                    "region": region,
                    "meta": {"synthetic": True, "doppler": bool(doppler), "note": "demo placeholder, no pixel data"},
                })
            self._adverse(prog, pid, proc_id, product_id, lot, day, guided, su, patient)
            last_proc = (proc_id, day, s, processing)
            if s == 0 and withdraw_after_first and consent_signed is not None:
                withdrawn_on = day + timedelta(days=7 + int(u[21] * 14))
                if withdrawn_on <= as_of:  # the patient withdraws consent: a new decision row, no more sessions
                    body = CONSENT_TEMPLATES[prog.modality] + CONSENT_COMMON
                    self._add("consents", {
                        "patient_id": pid,
                        "plan_id": plan_id,
                        "version": f"{prog.modality}-{CONSENT_VERSION}",
                        "text": body,
                        "text_digest": hashlib.sha256(body.encode()).hexdigest(),
                        "decision": "withdrawn",
                        "signer_name": f"{given} {family}",
                        "signer_role": "patient",
                        "signed_at": _at(withdrawn_on, 600 + 300 * u[22]),
                        "expires_on": None,
                        "research_use": False,
                        "recorded_by": nurse,
                    })
                    patient["research_consent"] = False
                else:
                    withdraw_after_first = False
        if last_proc is None:
            return pid
        # --- follow-up visits and observations -------------------------------------------------
        self._visits(prog, pid, last_proc[0], last_proc[1], clinician, visit_u, visit_z, retention12, dermal0,
                     hair0, injections)
        return pid

    # ------------------------------------------------------------------------------------------
    def _planned(self, prog: Program, region_u: Grid) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for k, spec in enumerate(prog.regions):
            ru = region_u[k]
            if ru[0] >= spec.p and not (k == len(prog.regions) - 1 and not out):
                continue
            sides = ["bilateral"] if spec.paired else ["midline"]
            if spec.paired and ru[2] < 0.15:  # one side only (asymmetry), ILLUSTRATIVE
                sides = ["left" if ru[2] < 0.075 else "right"]
            volume = None
            if spec.volume is not None:
                lo, mode, hi = spec.volume
                volume = _triangular(ru[1], lo, mode, hi) * (2 if sides == ["bilateral"] else 1)
                volume = round(volume, 2)
            depth = None
            if spec.needle_depth_mm is not None:
                depth = round(spec.needle_depth_mm[0] + ru[3] * (spec.needle_depth_mm[1] - spec.needle_depth_mm[0]), 2)
            bolus = spec.bolus_ml if (spec.bolus_ml is not None and volume is not None) else None
            if bolus is not None and volume is not None and bolus > volume:
                bolus = volume
            out.append({
                "region": spec.region,
                "side": sides[0],
                "plane": spec.plane,
                "device": spec.device,
                "gauge": spec.gauge,
                "volume_ml": volume,
                "bolus_ml": bolus,
                "needle_depth_mm": depth,
            })
        return out

    def _performed(
        self, prog: Program, proc_id: int, product_id: int | None, planned: list[dict[str, Any]], su: Row
    ) -> None:
        if prog.infusion:
            # Systemic infusion: one row links the product to the procedure ("intravenous" is not a KB region).
            self._add("performed_injections", {
                "procedure_id": proc_id, "product_id": product_id, "seq": 1, "region": "intravenous",
                "side": "midline", "plane": None, "device": None, "gauge": None, "volume_ml": None, "bolus_ml": None,
            })
            return
        for seq, inj in enumerate(planned, start=1):
            factor = 0.85 + 0.25 * float(su[17 + seq % 3])  # delivered vs planned volume, ILLUSTRATIVE
            volume = None if inj["volume_ml"] is None else round(inj["volume_ml"] * factor, 2)
            self._add("performed_injections", {
                "procedure_id": proc_id,
                "product_id": product_id,
                "seq": seq,
                "region": inj["region"],
                "side": inj["side"],
                "plane": inj["plane"],
                "device": inj["device"],
                "gauge": inj["gauge"],
                "volume_ml": volume,
                "bolus_ml": inj["bolus_ml"],
            })

    # ------------------------------------------------------------------------------------------
    def _product(
        self,
        prog: Program,
        site: _SiteRef,
        pid: int,
        plan_id: int,
        day: date,
        start_min: float,
        su: Row,
        nurse: int,
        lab: int,
        processing: str,
        planned_ml: float,
    ) -> tuple[int, str]:
        spec = site.spec
        if prog.infusion:
            # Apheresis 4-6 weeks before infusion (ILLUSTRATIVE; not in CK), cryopreserved.
            collected = _at(day - timedelta(days=28 + int(su[14] * 14)), 8 * 60 + 120 * float(su[15]))
        else:
            collected = _at(day, start_min)
        year = collected.year
        kit_lot = f"{prog.modality.upper()[:4]}-{year}{collected.month:02d}-{spec.code}"
        reagent_lot = None
        if prog.modality == "svf_enzymatic":  # collagenase lot, one per quarter and site
            reagent_lot = f"COLL-{year}Q{(collected.month - 1) // 3 + 1}-{spec.code}"
        if prog.product_ml is not None:
            lo, hi = prog.product_ml
            volume = round(lo + float(su[4]) * (hi - lo), 1)
        else:  # fat: injected volume plus 10-25% kept for overfill and losses (ILLUSTRATIVE)
            volume = round(planned_ml * (1.1 + 0.15 * float(su[4])), 1)
        qc_failed = bool(su[8] < P_QC_FAILED)
        if qc_failed:  # a first collection that failed QC and was discarded
            self._one_product(prog, site, pid, plan_id, collected - timedelta(minutes=45), volume, kit_lot,
                              reagent_lot, processing, nurse, lab, su, failed=True)
        pid_product = self._one_product(prog, site, pid, plan_id, collected, volume, kit_lot, reagent_lot,
                                        processing, nurse, lab, su, failed=False, administered_day=day,
                                        administered_min=start_min)
        return pid_product, kit_lot

    def _one_product(
        self,
        prog: Program,
        site: _SiteRef,
        pid: int,
        plan_id: int,
        collected: datetime,
        volume: float,
        kit_lot: str,
        reagent_lot: str | None,
        processing: str,
        nurse: int,
        lab: int,
        su: Row,
        *,
        failed: bool,
        administered_day: date | None = None,
        administered_min: float = 0.0,
    ) -> int:
        spec = site.spec
        identifier, scheme = _product_identifier(spec, collected.year, self.counters)
        product_id = self.ids["biologic_products"]
        if prog.infusion:
            steps = [("collected", 0.0), ("received", 60.0), ("processed", 60.0 * 24 * 10),
                     ("qc_passed", 60.0 * 24 * 18), ("released", 60.0 * 24 * 20)]
        else:
            steps = [("collected", 0.0), ("processed", 25.0 + 15 * float(su[5])), ("qc_passed", 42.0),
                     ("released", 45.0)]
        if failed:
            steps = [steps[0], steps[1] if steps[1][0] == "processed" else steps[2], ("qc_failed", 40.0),
                     ("discarded", 50.0)]
        events: list[tuple[str, datetime]] = [(s, collected + timedelta(minutes=mins)) for s, mins in steps]
        if not failed and administered_day is not None:
            # Infusion at the procedure time; local products 60 min (90 min after a fat harvest) after collection.
            admin = _at(administered_day, administered_min)
            if not prog.infusion:
                admin += timedelta(minutes=90 if prog.surgical else 60)
            issued = admin - timedelta(minutes=10)
            events += [("issued", issued), ("administered", admin)]
        processed_at = next(t for s, t in events if s == "processed")
        # PRP: 4 h at room temperature from processing (Wilson 2018, kb/data/products/hold_times.yaml).
        expires = processed_at + timedelta(hours=4) if prog.modality == "prp" else None
        metrics: dict[str, Any] = {}
        preparation: dict[str, Any] = {"method": processing}
        if prog.modality == "prp":
            # Baseline 150,000-350,000/uL (Marx 2001); double spin ~5-6.4x (Muthu 2022; PMC4005024) (CK §2.2).
            base = 150_000 + float(su[6]) * 200_000
            fold = 5.0 + 1.4 * float(su[7]) if processing == "double_spin" else 2.5 + 1.0 * float(su[7])
            metrics = {"baseline_platelets_per_uL": round(base), "platelets_per_uL": round(base * fold),
                       "fold": round(fold, 2)}
            preparation.update({"spins": 2 if processing == "double_spin" else 1, "activation": "none"})
        elif prog.modality in ("microfat", "nanofat", "cal", "svf_mechanical", "svf_enzymatic"):
            # Centrifugation 1,200 g x 3 min (CK §3.1); enzymatic SVF 0.5-1e6 cells/g, >80% viable (Aronowitz).
            preparation.update({"g_force": 1200, "minutes": 3} if "centrifugation" in processing else {})
            if prog.modality in ("svf_enzymatic", "cal"):
                metrics = {"cells_per_g": round(5e5 + float(su[6]) * 5e5),
                           "viability_pct": round(80 + 15 * float(su[7]), 1)}
            elif prog.modality == "svf_mechanical":
                metrics = {"cells_per_mL": round(1.34e6 * (0.7 + 0.6 * float(su[6]))),
                           "viability_pct": round(80 + 12 * float(su[7]), 1)}  # 1.34e6/mL, 86% (PMC7159941)
        self._add("biologic_products", {
            "patient_id": pid,
            "plan_id": plan_id,
            "parent_id": None,
            "identifier": identifier,
            "identifier_scheme": scheme,
            "product_type": prog.modality,
            "status": events[-1][0],
            "autologous": True,
            "collected_at": collected,
            "expires_at": expires,
            "volume_ml": volume,
            "kit_lot": kit_lot,
            "reagent_lot": reagent_lot,
            "preparation": preparation,
            "metrics": metrics,
            "version": 1,
        })
        for status, at in events:
            user = nurse if status in ("collected", "issued", "administered") else lab
            self._add("custody_events", {
                "product_id": product_id,
                "event_type": status,
                "status_after": status,
                "at": at,
                "location": f"{spec.name} " + ("laboratory" if user == lab else "procedure room"),
                "user_id": user,
                "note": "QC failed: discarded" if status == "qc_failed" else None,
            })
        return product_id

    # ------------------------------------------------------------------------------------------
    def _adverse(
        self,
        prog: Program,
        pid: int,
        proc_id: int,
        product_id: int | None,
        lot: str | None,
        day: date,
        guided: bool,
        su: Row,
        patient: dict[str, Any],
    ) -> None:
        rate = session_ae_rate(prog, guided)
        events: list[tuple[str, int, str, int, list[str], str, int | None]] = []
        if su[9] < rate:
            types = prog.ae_types
            w = np.array([t[1] for t in types])
            cum = np.cumsum(w / w.sum())
            pick = min(int((cum < su[10]).sum()), len(types) - 1)
            etype, _, lo, hi, related, onset_days = types[pick]
            grade = lo + min(int(su[11] * (hi - lo + 1)), hi - lo)
            seriousness = ["hospitalisation"] if grade == 3 else ["life_threatening"] if grade >= 4 else []
            recovery = 3 + int(su[12] * 40)
            events.append((etype, grade, related, onset_days, seriousness, "recovered", recovery))
        face_fat = prog.modality in ("microfat", "nanofat", "cal") and prog.key != "microfat_body"
        vascular_rate = VASCULAR_RATE * (1.0 if guided else VASCULAR_LANDMARK_RR)
        if face_fat and su[13] < vascular_rate and prog.key != "cal_breast":
            vision = bool(su[10] < 0.5)
            outcome = "not_recovered" if su[11] < VASCULAR_NOT_RECOVERED else "recovered_with_sequelae"
            events.append(("vision_loss" if vision else "vascular_occlusion", 4 if vision else 3, "certain", 0,
                           ["disability"] if vision else ["medically_important"], outcome, None))
        for etype, grade, related, onset_days, seriousness, outcome, recover_days in events:
            onset = day + timedelta(days=onset_days)
            if onset > self.as_of:
                continue
            resolved = None
            if recover_days is not None:
                end = onset + timedelta(days=recover_days)
                if end <= self.as_of:
                    resolved = end
                else:
                    outcome = "recovering"
            elif outcome == "recovered_with_sequelae":
                resolved = min(onset + timedelta(days=60), self.as_of)
            serious = bool(seriousness)
            self._add("adverse_events", {
                "patient_id": pid,
                "procedure_id": proc_id,
                "product_id": product_id,
                "lot": lot,
                "event_type": etype,
                "severity": grade,
                "serious": serious,
                "seriousness": seriousness,
                "relatedness": related,
                "onset_on": onset,
                "outcome": outcome,
                "resolved_on": resolved,
                "description": f"Demo event: {etype.replace('_', ' ')} after {prog.modality} "
                f"({'image-guided' if guided else 'landmark'}).",
                "version": 1,
            })
            if serious:
                patient["serious_event_flag"] = True

    # ------------------------------------------------------------------------------------------
    def _visits(
        self,
        prog: Program,
        pid: int,
        proc_id: int,
        anchor: date,
        clinician: int,
        visit_u: Grid,
        visit_z: Row,
        retention12: float,
        dermal0: float,
        hair0: float,
        injections: list[dict[str, Any]],
    ) -> None:
        as_of = self.as_of
        horizon = as_of + timedelta(days=400)
        p_loss = P_LOSS_INFUSION if prog.infusion else P_LOSS
        lost = False
        injected = sum(i["volume_ml"] or 0 for i in injections)
        for k, spec in enumerate(prog.schedule):
            vu = visit_u[k]
            due = _add_months(anchor, spec.months) + timedelta(days=spec.days)
            if due > horizon:
                break
            start, end = due - timedelta(days=spec.before), due + timedelta(days=spec.after)
            resolved = as_of > end + timedelta(days=spec.grace)
            in_window = start <= as_of and not resolved
            if not lost and (resolved or in_window) and vu[0] < p_loss:
                lost = True
            status, completed = "scheduled", None
            if resolved:
                if vu[1] < P_CANCEL_VISIT:
                    status = "cancelled"
                elif lost or vu[2] < P_MISS:
                    status = "missed"
                else:
                    status = "completed"
            elif in_window and not lost and vu[2] >= P_MISS and vu[3] < P_EARLY:  # done early in its window
                status = "completed"
            if status == "completed":
                span = (end - start).days
                completed = start + timedelta(days=min(int(vu[5] * (span + 1)), span))
                if completed > as_of:
                    completed = as_of
            visit_id = self._add("followup_visits", {
                "patient_id": pid,
                "procedure_id": proc_id,
                "label": spec.label,
                "due_on": due,
                "window_start": start,
                "window_end": end,
                "status": status,
                "completed_on": completed,
                "version": 1,
            })
            if completed is None:
                continue
            at = _at(completed, 600 + 300 * float(vu[1]))
            for code, value, unit in _visit_observations(prog, spec.code, vu, float(visit_z[k]), retention12,
                                                         dermal0, hair0, injected):
                self._add("observations", _obs(pid, code, value, unit, at, clinician, visit_id=visit_id,
                                               procedure_id=proc_id))


def session_ae_rate(prog: Program, guided: bool) -> float:
    """Probability of a (non-vascular) adverse event in one session of `prog`.

    Landmark technique carries LANDMARK_RR times the image-guided risk (ILLUSTRATIVE assumption); the two are
    calibrated so that the program's average over its planned share of guidance stays at `prog.ae_rate`.
    Programs that are never image-guided (microneedling, infusions) get `ae_rate` as is.
    """
    if not 0 < prog.guided < 1:
        return prog.ae_rate
    guided_rate = prog.ae_rate / (prog.guided + (1 - prog.guided) * LANDMARK_RR)
    return guided_rate if guided else guided_rate * LANDMARK_RR


def _visit_observations(
    prog: Program, code: str, vu: Row, z: float, retention12: float, dermal0: float, hair0: float,
    injected: float,
) -> list[tuple[str, float, str | None]]:
    out: list[tuple[str, float, str | None]] = []
    if prog.gais is not None and code not in ("w1",):
        cum = np.cumsum(prog.gais)
        out.append(("gais_investigator", float(1 + min(int((cum < vu[4]).sum()), 4)), "{score}"))
    if prog.key in FAT_RETENTION_PROGRAMS and code in RETENTION_BY_VISIT and injected > 0:
        # The 12-month value is the patient's drawn retention; earlier ones add 3% measurement noise.
        noise = 0.0 if code == "m12" else 0.03 * z
        value = min(retention12 * RETENTION_BY_VISIT[code] * (1 + noise), 1.0)
        out.append(("graft_retention", round(100 * value, 1), "%"))
    if prog.key in ("prp_face", "microneedling", "nanofat", "svf_scar") and code in ("m3", "m6", "m12"):
        # ILLUSTRATIVE: +6% dermal thickness (sd 5%) after a course; no verified effect size in CK.
        out.append(("dermal_thickness_us", round(dermal0 * (1 + 0.06 + 0.05 * z), 2), "mm"))
    if prog.key == "prp_scalp" and code in ("m3", "m6"):
        # ILLUSTRATIVE: +12 hairs/cm2 (sd 15); evidence is mixed (21 of 24 studies positive, one placebo-controlled
        # pilot found no benefit: CK §2.3).
        out.append(("hair_density", round(max(hair0 + 12 + 15 * z, 20.0), 1), "/cm2"))
    if prog.key == "car_t" and code in ("d7", "d14"):
        # ASTCT grade 0-4 recorded at the visit (ILLUSTRATIVE distribution).
        grade = float(min(int((np.cumsum([0.35, 0.35, 0.2, 0.07]) < vu[4]).sum()), 4))
        out.append(("crs_astct" if code == "d7" else "icans_astct", grade, "{grade}"))
    return out


def _obs(
    pid: int,
    code: str,
    value: float,
    unit: str | None,
    at: datetime,
    recorded_by: int,
    *,
    assessment_id: int | None = None,
    visit_id: int | None = None,
    procedure_id: int | None = None,
) -> dict[str, Any]:
    return {
        "patient_id": pid,
        "assessment_id": assessment_id,
        "visit_id": visit_id,
        "procedure_id": procedure_id,
        "imaging_study_id": None,
        "code": code,
        "value": value,
        "value_text": None,
        "unit": unit,
        "observed_at": at,
        "recorded_by": recorded_by,
    }


def _severity(prog: Program, female: bool, age: int, u: float) -> tuple[str | None, float | None]:
    """Baseline severity on the program's instrument (ranges from CK §5-6; distributions ILLUSTRATIVE)."""
    if not prog.scales:
        return None, None
    scale = prog.scales[0]
    if prog.key == "prp_scalp":
        # Norwood-Hamilton I-VII for men, Ludwig I-III for women; PRP works best in Norwood II-V (IADVL).
        if female:
            return "ludwig", float(1 + min(int(u * 3), 2))
        return "norwood_hamilton", float(2 + min(int(u * 4), 3))
    if len(prog.scales) > 1 and u < 0.4:
        scale = prog.scales[1]
    if scale == "glogau":  # I-IV, by age decade (Glogau 1996, CK §6)
        base = 1 if age < 35 else 2 if age < 50 else 3 if age < 65 else 4
        return scale, float(min(4, base + (1 if u > 0.8 else 0)))
    if scale == "wsrs":  # 1-5
        return scale, float(2 + min(int(u * 3 / 0.4), 2))
    if scale == "posas_observer":  # 6-60
        return scale, float(18 + int(u * 25))
    if scale == "vss":  # 0-13
        return scale, float(3 + int(u * 8))
    return scale, None


def _triangular(u: float, lo: float, mode: float, hi: float) -> float:
    """Inverse CDF of the triangular distribution (one uniform in, one draw out)."""
    c = (mode - lo) / (hi - lo)
    if u < c:
        return lo + float(np.sqrt(u * (hi - lo) * (mode - lo)))
    return hi - float(np.sqrt((1 - u) * (hi - lo) * (hi - mode)))


def _phone(jurisdiction: str, pid: int) -> str:
    # Numbers in ranges reserved for fiction or drama where they exist (US 555-01xx, UK 07700 900xxx).
    tail = pid % 1000
    return {
        "US": f"+1 617 555 01{tail % 100:02d}",
        "GB": f"+44 7700 900{tail:03d}",
        "DE": f"+49 30 {tail:03d}00000",
        "FR": f"+33 4 00 00 {tail % 100:02d} {tail // 10 % 100:02d}",
        "IN": f"+91 22 0000 {tail:04d}",
        "JP": f"+81 6 0000 {tail:04d}",
    }.get(jurisdiction, f"+00 {tail:06d}")


def _plan_document(
    prog: Program,
    spec: SiteSpec,
    female: bool,
    age: int,
    fitz: int,
    smoker: bool,
    imaging: str,
    doppler: bool,
    injections: list[dict[str, Any]],
    sessions: int,
    planned_on: date,
    consent: dict[str, Any] | None,
    z: Row,
) -> dict[str, Any]:
    """A `regenguide.plan/1` document (domain/plan.py), without identifiers."""
    patient: dict[str, Any] = {"age": age, "sex": "female" if female else "male", "fitzpatrick": fitz,
                               "smoker": smoker}
    weight = float(np.clip((64 if female else 80) + 11 * z[2], 45, 130))  # ILLUSTRATIVE
    patient["weight_kg"] = round(weight, 1)
    if prog.modality == "prp":
        patient["platelets_per_uL"] = round(float(np.clip(250_000 + 50_000 * z[3], 150_000, 400_000)))
        patient["hemoglobin_g_dL"] = round(float(np.clip((13.2 if female else 14.8) + 1.0 * z[4], 10.5, 17.5)), 1)
    doc: dict[str, Any] = {
        "schema": PLAN_SCHEMA,
        "jurisdiction": spec.jurisdiction,
        "patient": patient,
        "indication": prog.indication,
        "modality": prog.modality,
        "guidance": {"imaging": imaging, "doppler": doppler},
        "injections": [{k: v for k, v in inj.items() if v is not None} for inj in injections],
        "course": {"sessions": sessions, "interval_weeks": prog.interval_weeks},
        "planned_date": planned_on.isoformat(),
    }
    if prog.surgical:
        doc["same_surgical_procedure"] = True
        doc["homologous_use"] = prog.modality in ("microfat", "cal")
    if consent is not None:
        doc["consent"] = consent
    return doc


def demo_patient_ids(engine: Engine, limit: int = 10) -> list[int]:
    """Ids of the first demo patients (handy for examples and benchmarks)."""
    with engine.connect() as conn:
        return [int(r) for r in conn.execute(select(m.Patient.id).order_by(m.Patient.id).limit(limit)).scalars()]


def table_counts(engine: Engine, tables: Iterable[Table] = PATHWAY_TABLES) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in tables}
