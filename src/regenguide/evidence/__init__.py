"""Evidence synthesis and registry statistics: meta-analysis (validated against metafor and statsmodels),
GRADE summary-of-findings tables, Kaplan–Meier/log-rank/Cox summaries (lifelines) and the statistics the
registry analytics call on aggregated counts. Pure functions on arrays, DataFrames and pydantic models;
no database, API or CLI imports. Plots live in `regenguide.evidence.plots`.

Names are imported lazily (PEP 562) so that importing the package, e.g. from the CLI, does not pay for
statsmodels and lifelines up front."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, str] = {
    "ChangeFromBaseline": "regenguide.evidence.registry",
    "CoxSummary": "regenguide.evidence.survival",
    "CoxTerm": "regenguide.evidence.survival",
    "EffectSizeError": "regenguide.evidence.effects",
    "EffectSizes": "regenguide.evidence.effects",
    "EggerTest": "regenguide.evidence.meta",
    "GroupSummary": "regenguide.evidence.survival",
    "LogRank": "regenguide.evidence.survival",
    "LogisticSummary": "regenguide.evidence.registry",
    "MeanDifference": "regenguide.evidence.registry",
    "Measure": "regenguide.evidence.effects",
    "MetaAnalysisError": "regenguide.evidence.meta",
    "MetaRegressionResult": "regenguide.evidence.metareg",
    "MetaResult": "regenguide.evidence.meta",
    "Method": "regenguide.evidence.meta",
    "OddsRatioTerm": "regenguide.evidence.registry",
    "OutcomeAssessment": "regenguide.evidence.grade",
    "Proportion": "regenguide.evidence.registry",
    "Rating": "regenguide.evidence.grade",
    "RegistryStatsError": "regenguide.evidence.registry",
    "RegressionTest": "regenguide.evidence.metareg",
    "RiskRatio": "regenguide.evidence.registry",
    "StratifiedRiskRatio": "regenguide.evidence.registry",
    "SummaryOfFindings": "regenguide.evidence.grade",
    "SurvivalInputError": "regenguide.evidence.survival",
    "SurvivalResult": "regenguide.evidence.survival",
    "WaldTest": "regenguide.evidence.metareg",
    "binary_effects": "regenguide.evidence.effects",
    "change_from_baseline": "regenguide.evidence.registry",
    "change_from_summary": "regenguide.evidence.registry",
    "combine": "regenguide.evidence.effects",
    "continuous_effects": "regenguide.evidence.effects",
    "cox_model": "regenguide.evidence.survival",
    "difference_in_means": "regenguide.evidence.registry",
    "egger_test": "regenguide.evidence.meta",
    "generic_effects": "regenguide.evidence.effects",
    "hedges_j": "regenguide.evidence.effects",
    "kaplan_meier": "regenguide.evidence.survival",
    "logistic_regression": "regenguide.evidence.registry",
    "mantel_haenszel": "regenguide.evidence.meta",
    "mantel_haenszel_rr": "regenguide.evidence.registry",
    "mean_table": "regenguide.evidence.registry",
    "meta_analysis": "regenguide.evidence.meta",
    "meta_regression": "regenguide.evidence.metareg",
    "outcome_from_meta": "regenguide.evidence.grade",
    "registry_study_row": "regenguide.evidence.registry",
    "regression_test": "regenguide.evidence.metareg",
    "risk_ratio": "regenguide.evidence.registry",
    "tau2_q_profile": "regenguide.evidence.meta",
    "wilson_interval": "regenguide.evidence.registry",
    "wilson_table": "regenguide.evidence.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
