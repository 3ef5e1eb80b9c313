"""Follow-up and outcomes throughput on one core: schedules and visit states for a clinic-sized and a
registry-sized cohort, the weekly work list, instrument scoring, questionnaire validation and
adverse-event flags. Synthetic data generated here (seeded). Writes bench/results/outcomes.json.

Run: .venv/bin/python bench/bench_outcomes.py
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from regenguide.outcomes.adverse_events import AdverseEventReport, patient_flags
from regenguide.outcomes.instruments import score
from regenguide.outcomes.questionnaire import build_response, example_questionnaire, validate_response
from regenguide.outcomes.schedule import CompletedVisit, build_schedule, follow_up_status, visit_states, work_list

MODALITIES = ["microfat", "nanofat", "prp", "microneedling", "svf_mechanical", "car_t"]
TODAY = date(2026, 11, 23)


def _time(fn: Callable[[], Any], n: int, repeats: int = 3) -> dict[str, float]:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    return {
        "n": n,
        "seconds_median": round(median, 4),
        "seconds_best": round(min(runs), 4),
        "per_second": round(n / median, 1),
        "us_per_item": round(1e6 * median / n, 2),
    }


def _cohort(n: int, rng: random.Random) -> list[tuple[str, str, date]]:
    return [(f"p{i}", rng.choice(MODALITIES), TODAY - timedelta(days=rng.randint(0, 3 * 365))) for i in range(n)]


def main() -> None:
    rng = random.Random(20261122)
    results: dict[str, Any] = {}

    cohort = _cohort(5000, rng)
    results["build_schedule_5000_patients"] = _time(
        lambda: [build_schedule(m, d, patient_ref=p) for p, m, d in cohort], len(cohort)
    )

    plans = [build_schedule(m, d, patient_ref=p) for p, m, d in cohort]
    done = []
    for plan in plans:
        done.append(
            [
                CompletedVisit(visit_code=v.code, on=v.target_date, patient_ref=v.patient_ref)
                for v in plan
                if v.target_date <= TODAY and rng.random() < 0.7
            ]
        )
    n_visits = sum(len(p) for p in plans)

    def states_all() -> list[Any]:
        return [visit_states(plan, comp, TODAY) for plan, comp in zip(plans, done, strict=True)]

    results["visit_states_5000_patients"] = _time(states_all, len(plans)) | {"visits": n_visits}
    all_states = states_all()
    results["follow_up_status_5000_patients"] = _time(
        lambda: [follow_up_status(s, c, TODAY) for s, c in zip(all_states, done, strict=True)], len(plans)
    )
    flat = [s for states in all_states for s in states]
    results["work_list_over_all_visit_states"] = _time(lambda: work_list(flat, TODAY), len(flat))
    lost = sum(follow_up_status(s, c, TODAY).lost_to_follow_up for s, c in zip(all_states, done, strict=True))
    results["cohort_lost_to_follow_up_fraction"] = round(lost / len(plans), 4)

    posas = [
        {
            k: rng.randint(1, 10)
            for k in (
                "vascularity",
                "pigmentation",
                "thickness",
                "relief",
                "pliability",
                "surface_area",
                "overall_opinion",
            )
        }
        for _ in range(5000)
    ]
    results["score_posas_observer"] = _time(lambda: [score("posas_observer", r) for r in posas], len(posas))
    crs = [
        {
            "temperature_c": round(rng.uniform(36.5, 40.5), 1),
            "hypotension": rng.choice(["none", "no_vasopressor", "one_vasopressor", "multiple_vasopressors"]),
            "oxygen": rng.choice(["none", "low_flow", "high_flow", "positive_pressure"]),
        }
        for _ in range(5000)
    ]
    results["score_crs_astct"] = _time(lambda: [score("crs_astct", r) for r in crs], len(crs))
    icans = [
        {"ice_score": rng.randint(0, 10), "seizure": rng.choice(["none", "none", "rapidly_resolving"])}
        for _ in range(5000)
    ]
    results["score_icans_astct"] = _time(lambda: [score("icans_astct", r) for r in icans], len(icans))

    q = example_questionnaire()
    levels = ["none", "mild", "moderate", "severe"]
    answers = [
        {
            "pain": rng.choice(levels),
            "swelling": rng.choice(levels),
            "bruising": rng.choice(levels),
            "vision_change": False,
            "days_off_work": rng.randint(0, 10),
        }
        for _ in range(1000)
    ]
    results["questionnaire_build_and_validate"] = _time(lambda: [build_response(q, a) for a in answers], len(answers))
    responses = [build_response(q, a) for a in answers]
    results["questionnaire_validate_only"] = _time(lambda: [validate_response(q, r) for r in responses], len(responses))

    terms = ["bruising", "oedema", "pain", "infection", "nodule", "vision_loss", "skin_necrosis"]
    events = [
        AdverseEventReport(
            patient_ref=f"p{i % 2000}",
            term=rng.choice(terms),
            modality="microfat",
            onset_date=TODAY,
            severity_grade=rng.randint(1, 3),
            relatedness="possible",
            outcome="recovering",
        )
        for i in range(10000)
    ]
    results["patient_flags_10000_events"] = _time(lambda: patient_flags(events), len(events))

    doc = {
        "benchmark": "follow-up schedules, visit states, instrument scoring, questionnaires and adverse-event flags",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "cases": results,
    }
    out = Path(__file__).parent / "results" / "outcomes.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
