"""Small vocabularies shared by the imaging modules and the CLI (kept free of heavy imports)."""

from __future__ import annotations

from enum import StrEnum


class DopplerMode(StrEnum):
    color = "color"
    power = "power"


class FlowDirection(StrEnum):
    towards = "towards"
    away = "away"
    mixed = "mixed"
    undetermined = "undetermined"
