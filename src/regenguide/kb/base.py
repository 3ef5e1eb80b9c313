"""Loading, validating and indexing the knowledge base.

`load_knowledge_base(folder)` reads the top-level `*.yaml` topic files of a folder (subfolders belong to
other areas and are ignored), validates every entry against its schema, resolves every citation id and
checks cross-references (a danger zone names a known region, a protocol a known indication, ...). Any
problem raises `KnowledgeBaseError` naming the file and entry. Lookups the plan check needs are
precomputed here so that a check is a handful of dict look-ups per injection.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from regenguide.domain.plan import Modality
from regenguide.kb.references import KnowledgeBaseError, UnknownCitation, load_references
from regenguide.kb.schema import (
    TOPIC_MODELS,
    Cited,
    Contraindication,
    DangerZone,
    GradeLevel,
    ImagingGuidance,
    Indication,
    KBFile,
    MedicationClass,
    ModalityInfo,
    Plane,
    Protocol,
    Region,
    RuleSpec,
    SubunitVolume,
)

TOPICS: tuple[str, ...] = tuple(TOPIC_MODELS)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class KnowledgeBase:
    """The validated knowledge base plus precomputed lookups (aliases resolved to canonical codes)."""

    regions: dict[str, Region]
    planes: dict[str, Plane]
    indications: dict[str, Indication]
    grade_levels: dict[str, GradeLevel]
    danger_zones: dict[str, DangerZone]
    modalities: dict[str, ModalityInfo]
    volumes: dict[str, SubunitVolume]
    protocols: dict[str, Protocol]
    contraindications: dict[str, Contraindication]
    medications: dict[str, MedicationClass]
    imaging_guidance: dict[str, ImagingGuidance]
    rules: dict[str, RuleSpec]
    versions: dict[str, str]
    version: str
    # --- derived lookups -------------------------------------------------------------------------------
    region_alias: dict[str, str] = field(default_factory=dict)
    plane_alias: dict[str, str] = field(default_factory=dict)
    indication_alias: dict[str, str] = field(default_factory=dict)
    volume_by_region: dict[str, SubunitVolume] = field(default_factory=dict)
    protocol_by_key: dict[tuple[str, str], Protocol] = field(default_factory=dict)
    contraindications_by_modality: dict[str, tuple[Contraindication, ...]] = field(default_factory=dict)
    medication_class_of: dict[str, frozenset[str]] = field(default_factory=dict)
    # Memo for consumers (e.g. the plan check's per-rule citation/source metadata); keyed by the consumer.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    # --- vocabulary helpers ----------------------------------------------------------------------------
    # Exact codes hit the first dict look-up; only other spellings pay for normalisation.
    def region(self, code: str) -> Region | None:
        canonical = self.region_alias.get(code) or self.region_alias.get(_norm(code))
        return self.regions[canonical] if canonical else None

    def plane(self, code: str) -> Plane | None:
        canonical = self.plane_alias.get(code) or self.plane_alias.get(_norm(code))
        return self.planes[canonical] if canonical else None

    def indication(self, code: str) -> Indication | None:
        canonical = self.indication_alias.get(code) or self.indication_alias.get(_norm(code))
        return self.indications[canonical] if canonical else None

    def medication_classes(self, name: str) -> frozenset[str]:
        """Classes of a medication as written by a clinician: the whole name ("warfarin"), or any word or
        pair of adjacent words in it ("Warfarin 5 mg", "Eliquis (apixaban) 5 mg bid", "acetylsalicylic acid
        100 mg")."""
        whole = self.medication_class_of.get(_norm(name))
        if whole is not None:
            return whole
        words = [w for w in re.split(r"[^a-z]+", name.lower()) if w]
        keys = [*words, *(f"{a}_{b}" for a, b in zip(words, words[1:], strict=False))]
        found: set[str] = set()
        for key in keys:
            found |= self.medication_class_of.get(key, frozenset())
        return frozenset(found)

    # --- CLI / API views -------------------------------------------------------------------------------
    def topics(self) -> list[str]:
        return list(TOPICS)

    def show(self, topic: str) -> list[dict[str, Any]]:
        """JSON-ready entries of a topic; raises KeyError naming the valid topics."""
        table = self._table(topic)
        return [_sources_last(entry.model_dump(mode="json", exclude_none=True)) for entry in table.values()]

    def _table(self, topic: str) -> dict[str, Any]:
        attr = {"grade": "grade_levels", "imaging": "imaging_guidance"}.get(topic, topic)
        if topic not in TOPICS:
            raise KeyError(f"unknown topic {topic!r}; valid topics: {', '.join(TOPICS)}")
        table: dict[str, Any] = getattr(self, attr)
        return table


def _sources_last(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry's own fields first, then note, evidence and citations (easier to read)."""
    tail = ("note", "evidence", "citations")
    return {**{k: v for k, v in entry.items() if k not in tail}, **{k: entry[k] for k in tail if k in entry}}


def _norm(code: str) -> str:
    return code.strip().lower().replace("-", "_").replace(" ", "_")


def _iter_citations(obj: Any, path: str) -> Iterator[tuple[str, str]]:
    """Yield (citation id, where) for every `citations` / `*_citations` list inside a model."""
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            if name == "citations" or name.endswith("_citations"):
                for cid in value:
                    yield cid, f"{path}.{name}"
            else:
                yield from _iter_citations(value, f"{path}.{name}")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _iter_citations(value, f"{path}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _iter_citations(value, f"{path}[{i}]")


_KEYS = ("code", "id", "region", "subunit", "modality")


def _errors(exc: ValidationError) -> str:
    """One line per problem: `field.path: message` (pydantic's own text, without the input dump)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(entry)'}: {e['msg']}" for e in exc.errors())


def _entry_key(topic: str, entry: Cited) -> str:
    for attr in _KEYS:
        value = getattr(entry, attr, None)
        if value is not None:
            return str(value)
    raise KnowledgeBaseError(f"{topic}: entry without a key")  # pragma: no cover - schema guarantees one


def parse_topic(name: str, raw: object, topic: str) -> tuple[str, dict[str, Cited]]:
    """Validate one parsed topic file; returns (version, key -> entry)."""
    try:
        envelope = KBFile.model_validate(raw)
    except ValidationError as exc:
        raise KnowledgeBaseError(f"{name}: malformed file envelope: {_errors(exc)}") from exc
    if envelope.topic != topic:
        raise KnowledgeBaseError(f"{name}: topic {envelope.topic!r} does not match the file name")
    model = TOPIC_MODELS[topic]
    refs = load_references()
    out: dict[str, Cited] = {}
    for index, raw_entry in enumerate(envelope.entries):
        label = next((str(raw_entry[k]) for k in _KEYS if isinstance(raw_entry.get(k), str)), "")
        where = f"{name} entry {index}" + (f" ({label})" if label else "")
        try:
            entry = model.model_validate(raw_entry)
        except ValidationError as exc:
            raise KnowledgeBaseError(f"{where}: {_errors(exc)}") from exc
        for cid, at in _iter_citations(entry, where):
            if cid not in refs:
                raise UnknownCitation(cid, at)
        key = _entry_key(topic, entry)
        if key in out:
            raise KnowledgeBaseError(f"{where}: duplicate key {key!r}")
        out[key] = entry
    return envelope.version, out


def _default_folder() -> Traversable:
    return resources.files("regenguide.kb") / "data"


def _read_topics(folder: Traversable | Path) -> Iterable[tuple[str, str, str]]:
    """(topic, file name, text) for each top-level topic file; subfolders are not visited."""
    entries = {entry.name: entry for entry in folder.iterdir() if entry.is_file()}
    for topic in TOPICS:
        name = f"{topic}.yaml"
        if name not in entries:
            raise KnowledgeBaseError(f"knowledge base file {name} is missing")
        yield topic, name, entries[name].read_text(encoding="utf-8")


def load_knowledge_base(folder: Traversable | Path | None = None) -> KnowledgeBase:
    """Load and validate every topic file of `folder` (default: the packaged data)."""
    folder = folder if folder is not None else _default_folder()
    tables: dict[str, dict[str, Cited]] = {}
    versions: dict[str, str] = {}
    digest = hashlib.sha256()
    for topic, name, text in _read_topics(folder):
        try:
            raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader (C version when available)
        except yaml.YAMLError as exc:
            raise KnowledgeBaseError(f"{name}: not valid YAML: {exc}") from exc
        versions[topic], tables[topic] = parse_topic(name, raw, topic)
        digest.update(name.encode() + b"\0" + text.encode())
    kb = KnowledgeBase(
        regions=tables["regions"],  # type: ignore[arg-type]
        planes=tables["planes"],  # type: ignore[arg-type]
        indications=tables["indications"],  # type: ignore[arg-type]
        grade_levels=tables["grade"],  # type: ignore[arg-type]
        danger_zones=tables["danger_zones"],  # type: ignore[arg-type]
        modalities=tables["modalities"],  # type: ignore[arg-type]
        volumes=tables["volumes"],  # type: ignore[arg-type]
        protocols=tables["protocols"],  # type: ignore[arg-type]
        contraindications=tables["contraindications"],  # type: ignore[arg-type]
        medications=tables["medications"],  # type: ignore[arg-type]
        imaging_guidance=tables["imaging"],  # type: ignore[arg-type]
        rules=tables["rules"],  # type: ignore[arg-type]
        versions=versions,
        version=digest.hexdigest()[:12],
    )
    _index(kb)
    return kb


def _alias_map(kind: str, table: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for code, entry in table.items():
        for name in [code, *entry.aliases]:
            key = _norm(name)
            if key in out and out[key] != code:
                raise KnowledgeBaseError(f"{kind}: alias {name!r} is used by both {out[key]!r} and {code!r}")
            out[key] = code
    return out


def _index(kb: KnowledgeBase) -> None:
    """Cross-check references between topics and fill the derived lookups (fails loudly)."""
    set_ = object.__setattr__  # the dataclass is frozen for users; indexing happens once, here
    set_(kb, "region_alias", _alias_map("regions", kb.regions))
    set_(kb, "plane_alias", _alias_map("planes", kb.planes))
    set_(kb, "indication_alias", _alias_map("indications", kb.indications))

    missing = sorted({m.value for m in Modality} - set(kb.modalities))
    if missing:
        raise KnowledgeBaseError(f"modalities.yaml: missing modality code(s) {missing}")
    for code, mod in kb.modalities.items():
        for ind in mod.indications:
            if ind not in kb.indications:
                raise KnowledgeBaseError(f"modalities.yaml ({code}): unknown indication {ind!r}")
    if set(kb.grade_levels) != {"high", "moderate", "low", "very_low"}:
        raise KnowledgeBaseError("grade.yaml: needs exactly high, moderate, low and very_low")

    for region, zone in kb.danger_zones.items():
        reg = kb.regions.get(region)
        if reg is None:
            raise KnowledgeBaseError(f"danger_zones.yaml ({region}): unknown region")
        if not reg.high_risk_vascular:
            raise KnowledgeBaseError(f"danger_zones.yaml ({region}): region is not flagged high_risk_vascular")
        for plane in zone.safe_planes:
            if plane not in kb.planes:
                raise KnowledgeBaseError(f"danger_zones.yaml ({region}): unknown plane {plane!r}")
    for code, reg in kb.regions.items():
        if reg.high_risk_vascular and code not in kb.danger_zones:
            raise KnowledgeBaseError(f"regions.yaml ({code}): high-risk region without a danger_zones entry")

    volume_by_region: dict[str, SubunitVolume] = {}
    for subunit, vol in kb.volumes.items():
        for region in vol.regions:
            if region not in kb.regions:
                raise KnowledgeBaseError(f"volumes.yaml ({subunit}): unknown region {region!r}")
            if region in volume_by_region:
                raise KnowledgeBaseError(f"volumes.yaml ({subunit}): region {region!r} is in two subunits")
            volume_by_region[region] = vol
    set_(kb, "volume_by_region", volume_by_region)

    protocol_by_key: dict[tuple[str, str], Protocol] = {}
    for pid, proto in kb.protocols.items():
        if proto.indication not in kb.indications:
            raise KnowledgeBaseError(f"protocols.yaml ({pid}): unknown indication {proto.indication!r}")
        for region in proto.needle_depth_mm:
            if region not in kb.regions:
                raise KnowledgeBaseError(f"protocols.yaml ({pid}): unknown region {region!r}")
        key = (proto.modality.value, proto.indication)
        if key in protocol_by_key:
            raise KnowledgeBaseError(f"protocols.yaml ({pid}): second protocol for {key}")
        protocol_by_key[key] = proto
    set_(kb, "protocol_by_key", protocol_by_key)

    for rid, rule in kb.rules.items():
        for param, table in (("regions", kb.regions), ("planes", kb.planes)):
            codes = rule.params.get(param)
            if codes is None:
                continue
            if not isinstance(codes, list) or any(c not in table for c in codes):
                raise KnowledgeBaseError(
                    f"rules.yaml ({rid}): params.{param} must list known {param} codes, got {codes!r}"
                )

    class_of: dict[str, set[str]] = {}
    for code, med in kb.medications.items():
        for member in med.members:
            class_of.setdefault(_norm(member), set()).add(code)
    set_(kb, "medication_class_of", {k: frozenset(v) for k, v in class_of.items()})

    by_modality: dict[str, list[Contraindication]] = {m.value: [] for m in Modality}
    for cid, contra in kb.contraindications.items():
        for cls in contra.trigger.medication_classes_any:
            if cls not in kb.medications:
                raise KnowledgeBaseError(f"contraindications.yaml ({cid}): unknown medication class {cls!r}")
        if contra.trigger.nsaid_within_hours is not None and "nsaid" not in kb.medications:
            raise KnowledgeBaseError(f"contraindications.yaml ({cid}): needs the 'nsaid' medication class")
        targets: set[str] = set()
        for m in contra.modalities:
            if m == "elective":
                targets |= {code for code, info in kb.modalities.items() if info.elective}
            else:
                targets.add(m)
        for m in sorted(targets):
            by_modality[m].append(contra)
    set_(kb, "contraindications_by_modality", {k: tuple(v) for k, v in by_modality.items()})
