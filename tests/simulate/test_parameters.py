"""The parameter file: loads, cites resolvable sources, fails loudly when malformed, and its derived values
follow from their cited inputs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import yaml

from regenguide.kb.references import KnowledgeBaseError, resolve
from regenguide.simulate.parameters import (
    load_graft_knowledge,
    nominal_parameters,
    parse_graft_knowledge,
    sample_parameters,
    unverified_parameters,
)


def _raw() -> dict:
    from importlib import resources

    path = resources.files("regenguide.kb") / "data" / "graft" / "parameters.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_loads_and_citations_resolve(kb) -> None:  # type: ignore[no-untyped-def]
    assert len(resolve(kb.all_citations())) == len(kb.all_citations())
    assert all(p.citations for p in kb.parameters)


def test_malformed_files_fail_loudly() -> None:
    raw = _raw()
    broken = copy.deepcopy(raw)
    broken["parameters"] = [p for p in broken["parameters"] if p["name"] != "take_survival"]
    with pytest.raises(KnowledgeBaseError, match="take_survival"):
        parse_graft_knowledge(broken)
    broken = copy.deepcopy(raw)
    broken["parameters"][0]["nominal"] = 1.0  # outside its range
    with pytest.raises(KnowledgeBaseError, match="outside"):
        parse_graft_knowledge(broken)
    broken = copy.deepcopy(raw)
    broken["parameters"][0]["citations"] = ["graft.no-such-paper"]
    with pytest.raises(KnowledgeBaseError, match="no-such-paper"):
        parse_graft_knowledge(broken)
    broken = copy.deepcopy(raw)
    broken["parameters"][0]["evidence"] = "probably"
    with pytest.raises(KnowledgeBaseError):
        parse_graft_knowledge(broken)


def test_consumption_derived_from_khouri_and_carpaneda(kb) -> None:  # type: ignore[no-untyped-def]
    d, alpha = kb.value("diffusivity_cm2_s"), kb.value("solubility_mol_cm3_mmhg")
    c0 = alpha * kb.value("boundary_po2_lean_mmhg")
    q = kb.param("consumption_mol_cm3_s")
    assert q.nominal == pytest.approx(4 * d * c0 / 0.16**2, rel=1e-3)  # Khouri Rc = 0.16 cm
    assert q.high == pytest.approx(2 * d * c0 / 0.10**2, rel=1e-3)  # Carpaneda rim 1.0 mm
    assert q.low == pytest.approx(2 * d * c0 / 0.20**2, rel=1e-3)  # Carpaneda rim 2.0 mm


def test_processing_factors_are_wu_ratios(kb) -> None:  # type: ignore[no-untyped-def]
    mean = (41 + 34 + 31) / 3
    for name, value in (("cotton_pad", 41), ("centrifugation", 34), ("sedimentation", 31)):
        assert kb.processing[name].value == pytest.approx(value / mean, abs=1e-3)


def test_adipocyte_threshold_reproduces_eto_300_um(kb) -> None:  # type: ignore[no-untyped-def]
    delta = 0.16 / math.sqrt(2)
    expected = kb.value("boundary_po2_lean_mmhg") * ((delta - 0.03) / delta) ** 2
    assert kb.value("adipocyte_threshold_mmhg") == pytest.approx(expected, abs=0.05)


def test_sampling_respects_ranges_and_overrides(kb) -> None:  # type: ignore[no-untyped-def]
    draws = sample_parameters(4000, seed=1, knowledge=kb, fixed={"consumption_mol_cm3_s": 1e-10})
    assert np.all(draws["consumption_mol_cm3_s"] == 1e-10)
    po2 = draws["boundary_po2_mmhg"]
    spec = kb.param("boundary_po2_lean_mmhg")
    assert po2.min() >= spec.low and po2.max() <= spec.high
    assert po2.mean() == pytest.approx(55.0, abs=0.6)
    ts = draws["take_survival"]
    assert ts.min() >= 0.41 and ts.max() <= 0.53
    assert np.all(draws["diffusivity_cm2_s"] == kb.value("diffusivity_cm2_s"))  # held fixed
    obese = sample_parameters(4000, seed=1, knowledge=kb, obese=True)
    assert obese["boundary_po2_mmhg"].mean() == pytest.approx(47.0, abs=0.8)


def test_nominal_overrides_and_perfusion(kb) -> None:  # type: ignore[no-untyped-def]
    p = nominal_parameters(kb, perfusion="low", diffusivity_cm2_s=1.7e-5)
    assert p.diffusivity_cm2_s == 1.7e-5
    assert p.boundary_po2_mmhg == pytest.approx(55.0 * kb.perfusion_po2_factor["low"].value)
    with pytest.raises(KeyError):
        nominal_parameters(kb, no_such=1.0)


def test_unverified_parameters_are_listed() -> None:
    names = " ".join(unverified_parameters(load_graft_knowledge()))
    assert "solubility_mol_cm3_mmhg: unverified" in names
    assert "consumption_mol_cm3_s: unverified (derived)" in names
    assert "boundary_po2_lean_mmhg" not in names


def test_parameters_are_found_by_name_and_an_unknown_name_is_a_key_error() -> None:
    from regenguide.simulate.parameters import GraftKnowledge, load_graft_knowledge

    kb = load_graft_knowledge()
    assert all(kb.param(p.name) is p and kb.value(p.name) == p.nominal for p in kb.parameters)
    with pytest.raises(KeyError):
        kb.param("no_such_parameter")
    # The index is derived state: an equal knowledge base, validated anew, compares equal and finds the same.
    again = GraftKnowledge.model_validate(kb.model_dump(by_alias=True))
    assert again == kb and again.param("capacity_fraction") == kb.param("capacity_fraction")


def test_a_copy_with_other_parameters_reads_its_own_values(kb) -> None:  # type: ignore[no-untyped-def]
    """The by-name index follows the parameters: a copy with one value changed reads the new value, and the
    original keeps its own."""
    name = kb.parameters[0].name
    changed = [p.model_copy(update={"nominal": p.nominal * 2}) if p.name == name else p for p in kb.parameters]
    other = kb.model_copy(update={"parameters": changed})
    assert other.value(name) == pytest.approx(2 * kb.value(name))
    assert kb.value(name) == kb.parameters[0].nominal
    assert kb.model_copy().value(name) == kb.value(name)
