"""The clinical knowledge base: versioned YAML data shipped in the package, validated at load.

`knowledge_base()` returns the validated, indexed `KnowledgeBase` (loaded once per process). Every entry
carries citation ids that resolve through `regenguide.kb.references` and an evidence label.
"""

from __future__ import annotations

from functools import cache

from regenguide.kb.base import TOPICS, KnowledgeBase, load_knowledge_base
from regenguide.kb.references import KnowledgeBaseError, UnknownCitation
from regenguide.kb.schema import (
    Contraindication,
    DangerZone,
    ImagingGuidance,
    Indication,
    ModalityInfo,
    Plane,
    Protocol,
    Region,
    RuleSpec,
    SubunitVolume,
)


@cache
def knowledge_base() -> KnowledgeBase:
    """The packaged knowledge base, validated and indexed (cached; raises KnowledgeBaseError if broken)."""
    return load_knowledge_base()


__all__ = [
    "TOPICS",
    "Contraindication",
    "DangerZone",
    "ImagingGuidance",
    "Indication",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "ModalityInfo",
    "Plane",
    "Protocol",
    "Region",
    "RuleSpec",
    "SubunitVolume",
    "UnknownCitation",
    "knowledge_base",
    "load_knowledge_base",
]
