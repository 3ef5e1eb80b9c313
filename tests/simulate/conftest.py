"""Shared fixtures of the graft simulator tests."""

from __future__ import annotations

import pytest

from regenguide.simulate.parameters import ModelParameters, load_graft_knowledge, nominal_parameters


@pytest.fixture(scope="session")
def kb():  # type: ignore[no-untyped-def]
    return load_graft_knowledge()


@pytest.fixture(scope="session")
def nominal(kb) -> ModelParameters:  # type: ignore[no-untyped-def]
    return nominal_parameters(kb)
