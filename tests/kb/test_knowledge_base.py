"""The knowledge base loads, holds the sourced values, and fails loudly on broken data."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest
import yaml

from regenguide.domain.plan import Modality
from regenguide.kb import KnowledgeBaseError, UnknownCitation, knowledge_base, load_knowledge_base
from regenguide.kb.base import TOPICS, _iter_citations
from regenguide.kb.references import resolve

DATA = Path(str(resources.files("regenguide.kb") / "data"))


def test_all_modalities_with_grade() -> None:
    kb = knowledge_base()
    assert set(kb.modalities) == {m.value for m in Modality}
    for code, info in kb.modalities.items():
        assert info.code == code
        assert info.grade in {"high", "moderate", "low", "very_low"}
        assert info.mechanism and info.indications and info.citations


def test_grades_follow_the_seed_review_table_1() -> None:
    mods = knowledge_base().modalities
    # Table 1: PRP low to moderate, stem-cell therapy low to very low, fat-derived therapy moderate.
    assert (mods["prp"].grade, mods["prp"].grade_upper) == ("low", "moderate")
    assert mods["microfat"].grade == "moderate"
    for cell in ("svf_mechanical", "svf_enzymatic", "adsc_expanded", "bmac"):
        assert (mods[cell].grade, mods[cell].grade_upper) == ("very_low", "low")
    # Modalities outside Table 1 say how far their grade was checked.
    assert mods["microneedling"].grade_evidence == "expert_opinion"
    assert mods["car_t"].grade_evidence == "unverified"


def test_issue_danger_zones_are_high_risk_regions() -> None:
    kb = knowledge_base()
    for code in ("glabella", "nose", "forehead", "temple", "periorbital", "tear_trough", "nasolabial_fold", "lips"):
        region = kb.region(code)
        assert region is not None and region.high_risk_vascular
        assert region.code in kb.danger_zones
    assert not kb.regions["scalp"].high_risk_vascular


def test_critical_volumes_and_depths() -> None:
    zones = knowledge_base().danger_zones
    assert zones["glabella"].critical_bolus is not None
    assert zones["glabella"].critical_bolus.volume_ml == 0.085  # Khan 2017
    assert zones["nose"].critical_bolus is not None and zones["nose"].critical_bolus.volume_ml == 0.16  # Li 2023
    assert zones["nose"].critical_bolus.evidence == "expert_opinion"
    assert zones["glabella"].max_safe_depth_mm == 2.5  # Scheuer 2017, medial forehead
    depths = {d.depth_mm for d in zones["glabella"].depth_data}
    assert {3.34, 3.54} <= depths  # Cotofana 2020 ultrasound
    assert {21.6, 8.9} <= {d.depth_mm for d in zones["nasolabial_fold"].depth_data}  # Gelezhe 2021


def test_shue_2018_volumes() -> None:
    vols = knowledge_base().volumes
    expected = {  # subunit: (mean, min, max, per side)
        "forehead": (6.5, 4, 10, False),
        "glabella": (1.4, 1, 4, False),
        "temple": (5.9, 2, 10, True),
        "tear_trough": (0.65, 0.3, 1.0, True),
        "nasolabial_fold": (2.8, 1, 7.5, True),
        "mandible": (11.5, 4, 27, True),
        "chin": (6.7, 1, 20, False),
    }
    for subunit, (mean, lo, hi, per_side) in expected.items():
        v = vols[subunit]
        assert (v.mean_ml, v.min_ml, v.max_ml, v.per_side) == (mean, lo, hi, per_side)
    assert vols["brow"].max_ml is None  # a mean only in the source


def test_every_citation_resolves_and_every_entry_is_labelled() -> None:
    kb = knowledge_base()
    for topic in TOPICS:
        table = kb._table(topic)
        assert table, topic
        for key, entry in table.items():
            ids = [cid for cid, _ in _iter_citations(entry, f"{topic}.{key}")]
            assert ids, f"{topic}.{key} cites nothing"
            resolve(ids, where=f"{topic}.{key}")
            assert entry.evidence in {"verified", "secondary", "expert_opinion", "unverified"}


def test_lookups_resolve_aliases() -> None:
    kb = knowledge_base()
    assert kb.region("Cheek") is not None and kb.region("Cheek").code == "midface"  # type: ignore[union-attr]
    assert kb.plane("preperiosteal").code == "supraperiosteal"  # type: ignore[union-attr]
    assert kb.indication("AGA").code == "androgenetic_alopecia"  # type: ignore[union-attr]
    assert kb.region("elbow") is None
    assert kb.medication_classes("Aspirin") == {"nsaid"}
    assert kb.protocol_by_key[("prp", "androgenetic_alopecia")].sessions.min == 3  # type: ignore[union-attr]
    assert [c.id for c in kb.contraindications_by_modality["car_t"]] == []


def test_show_and_topics() -> None:
    kb = knowledge_base()
    assert kb.topics() == list(TOPICS)
    regions = kb.show("regions")
    glabella = next(r for r in regions if r["code"] == "glabella")
    assert glabella["high_risk_vascular"] is True and glabella["citations"]
    with pytest.raises(KeyError, match="valid topics"):
        kb.show("spells")


def test_rule_off_for_modality_from_bare_yaml_off() -> None:
    spec = knowledge_base().rules["volume.subunit_over_range"]
    assert spec.severity_for("nanofat") is None
    assert spec.severity_for("microfat") == "warning"


# --- broken documents --------------------------------------------------------------------------------
@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """A copy of the packaged top-level topic files plus an unrelated subfolder the loader must skip."""
    for topic in TOPICS:
        shutil.copy(DATA / f"{topic}.yaml", tmp_path / f"{topic}.yaml")
    other = tmp_path / "graft"
    other.mkdir()
    (other / "whatever.yaml").write_text("not: [a, knowledge, base, file", encoding="utf-8")
    return tmp_path


def _edit(folder: Path, topic: str, change: callable) -> None:  # type: ignore[valid-type]
    path = folder / f"{topic}.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def test_copy_loads_and_ignores_subfolders(data_copy: Path) -> None:
    kb = load_knowledge_base(data_copy)
    assert set(kb.modalities) == {m.value for m in Modality}


def test_unknown_citation_fails_loudly(data_copy: Path) -> None:
    _edit(data_copy, "danger_zones", lambda d: d["entries"][0]["citations"].append("nobody-2099"))
    with pytest.raises(UnknownCitation, match="nobody-2099.*danger_zones.yaml entry 0"):
        load_knowledge_base(data_copy)


def test_unknown_nested_citation_fails(data_copy: Path) -> None:
    def change(doc: dict) -> None:  # type: ignore[type-arg]
        doc["entries"][0]["critical_bolus"]["citations"] = ["ghost-1999"]

    _edit(data_copy, "danger_zones", change)
    with pytest.raises(UnknownCitation, match="ghost-1999"):
        load_knowledge_base(data_copy)


def test_malformed_entry_fails_naming_file_and_entry(data_copy: Path) -> None:
    _edit(data_copy, "volumes", lambda d: d["entries"][1].pop("mean_ml"))
    with pytest.raises(KnowledgeBaseError, match=r"volumes.yaml entry 1.*mean_ml"):
        load_knowledge_base(data_copy)


def test_misspelt_field_fails(data_copy: Path) -> None:
    _edit(data_copy, "regions", lambda d: d["entries"][0].update(high_risk_vasculr=True))
    with pytest.raises(KnowledgeBaseError, match="high_risk_vasculr"):
        load_knowledge_base(data_copy)


def test_missing_evidence_label_fails(data_copy: Path) -> None:
    _edit(data_copy, "modalities", lambda d: d["entries"][0].pop("evidence"))
    with pytest.raises(KnowledgeBaseError, match="evidence"):
        load_knowledge_base(data_copy)


def test_bad_grade_fails(data_copy: Path) -> None:
    _edit(data_copy, "modalities", lambda d: d["entries"][0].update(grade="excellent"))
    with pytest.raises(KnowledgeBaseError, match="grade"):
        load_knowledge_base(data_copy)


def test_missing_modality_fails(data_copy: Path) -> None:
    _edit(data_copy, "modalities", lambda d: d["entries"].pop())
    with pytest.raises(KnowledgeBaseError, match="missing modality"):
        load_knowledge_base(data_copy)


def test_danger_zone_with_unknown_plane_fails(data_copy: Path) -> None:
    _edit(data_copy, "danger_zones", lambda d: d["entries"][0].update(safe_planes=["subgaleal"]))
    with pytest.raises(KnowledgeBaseError, match="unknown plane 'subgaleal'"):
        load_knowledge_base(data_copy)


def test_inverted_range_fails(data_copy: Path) -> None:
    _edit(data_copy, "protocols", lambda d: d["entries"][0]["interval_weeks"].update(min=8, max=4))
    with pytest.raises(KnowledgeBaseError, match="above max"):
        load_knowledge_base(data_copy)


def test_trigger_needs_exactly_one_kind(data_copy: Path) -> None:
    _edit(data_copy, "contraindications", lambda d: d["entries"][0]["trigger"].update(pregnant=True))
    with pytest.raises(KnowledgeBaseError, match="exactly one"):
        load_knowledge_base(data_copy)


def test_alias_clash_fails(data_copy: Path) -> None:
    _edit(data_copy, "regions", lambda d: d["entries"][0].update(aliases=["glabella"]))
    with pytest.raises(KnowledgeBaseError, match="alias 'glabella'"):
        load_knowledge_base(data_copy)


def test_bad_yaml_and_missing_file_fail(data_copy: Path) -> None:
    (data_copy / "planes.yaml").write_text("entries: [unclosed", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match="planes.yaml: not valid YAML"):
        load_knowledge_base(data_copy)
    (data_copy / "planes.yaml").unlink()
    with pytest.raises(KnowledgeBaseError, match="planes.yaml is missing"):
        load_knowledge_base(data_copy)


def test_wrong_envelope_fails(data_copy: Path) -> None:
    _edit(data_copy, "grade", lambda d: d.update(schema="regenguide.kb/0"))
    with pytest.raises(KnowledgeBaseError, match="grade.yaml: malformed file envelope"):
        load_knowledge_base(data_copy)


def test_rule_params_name_known_codes(data_copy: Path) -> None:
    def change(doc: dict) -> None:  # type: ignore[type-arg]
        for rule in doc["entries"]:
            if rule["id"] == "body.gluteal_fat_deep_plane":
                rule["params"]["planes"] = ["intramuscular", "subfascial"]

    _edit(data_copy, "rules", change)
    with pytest.raises(KnowledgeBaseError, match="params.planes must list known planes"):
        load_knowledge_base(data_copy)
