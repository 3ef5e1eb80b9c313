"""Bibliographic references cited by the knowledge base, the checks and the models.

Every clinical number in RegenGuide carries one or more citation ids. The references live in
`kb/data/references/*.yaml` (one file per topic, so that each area of the product owns its list);
this module merges them, validates every entry at load and fails loudly on a malformed entry or a
duplicate id. `resolve(ids)` raises `UnknownCitation` for an id that is not defined, which is how
every other data file proves its citations resolve.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class EvidenceLabel(StrEnum):
    """How far a fact was checked: read in the primary source, taken from a secondary source,
    expert opinion, or not yet verified (shown as such to users)."""

    verified = "verified"
    secondary = "secondary"
    expert_opinion = "expert_opinion"
    unverified = "unverified"


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
    authors: str = Field(min_length=1)
    title: str = Field(min_length=1)
    source: str = Field(min_length=1, description="journal, publisher, regulator or standard body")
    year: int = Field(ge=1900, le=2100)
    doi: str | None = None
    pmid: str | None = None
    url: str | None = None
    evidence: EvidenceLabel = EvidenceLabel.verified
    note: str | None = None

    @model_validator(mode="after")
    def _locatable(self) -> Reference:
        if not (self.doi or self.pmid or self.url):
            raise ValueError(f"reference {self.id!r} needs a doi, pmid or url")
        return self

    @property
    def link(self) -> str:
        if self.doi:
            return f"https://doi.org/{self.doi}"
        if self.pmid:
            return f"https://pubmed.ncbi.nlm.nih.gov/{self.pmid}/"
        return self.url or ""

    def label(self) -> str:
        first = self.authors.split(",")[0].strip()
        return f"{first} {self.year}, {self.source}"


class KnowledgeBaseError(ValueError):
    """A knowledge-base file is malformed or inconsistent (raised at load, never at use)."""


class UnknownCitation(KnowledgeBaseError):
    def __init__(self, citation_id: str, where: str = "") -> None:
        self.citation_id = citation_id
        super().__init__(f"unknown citation id {citation_id!r}" + (f" in {where}" if where else ""))


def parse_references(documents: Iterable[tuple[str, object]]) -> dict[str, Reference]:
    """Validate `(file name, parsed YAML)` pairs into one id → Reference map."""
    merged: dict[str, Reference] = {}
    for name, data in documents:
        if not isinstance(data, list):
            raise KnowledgeBaseError(f"{name}: expected a list of references")
        for index, raw in enumerate(data):
            try:
                ref = Reference.model_validate(raw)
            except ValidationError as exc:
                raise KnowledgeBaseError(f"{name}[{index}]: {exc}") from exc
            if ref.id in merged:
                raise KnowledgeBaseError(f"{name}: duplicate reference id {ref.id!r}")
            merged[ref.id] = ref
    return merged


# PyYAML's C-accelerated safe loader when built with libyaml (several times faster), else the Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def load_references() -> dict[str, Reference]:
    folder = resources.files("regenguide.kb") / "data" / "references"
    docs = [
        (entry.name, yaml.load(entry.read_text(encoding="utf-8"), Loader=_SAFE_LOADER))  # noqa: S506
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    ]
    return parse_references(docs)


def cite(citation_id: str) -> Reference:
    refs = load_references()
    try:
        return refs[citation_id]
    except KeyError:
        raise UnknownCitation(citation_id) from None


def resolve(ids: Iterable[str], where: str = "") -> list[Reference]:
    """Resolve citation ids, raising `UnknownCitation` for the first unknown one."""
    refs = load_references()
    out = []
    for cid in ids:
        if cid not in refs:
            raise UnknownCitation(cid, where)
        out.append(refs[cid])
    return out
