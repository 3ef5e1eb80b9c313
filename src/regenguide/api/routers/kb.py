"""The knowledge base, read-only: topics, entries, citations, example plans."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from fastapi import APIRouter

from regenguide.api.deps import CurrentUser
from regenguide.api.problems import ProblemError
from regenguide.kb import knowledge_base
from regenguide.kb.references import load_references

router = APIRouter(prefix="/kb", tags=["knowledge base"])


@router.get("", summary="Knowledge-base version and topics")
def topics(user: CurrentUser) -> dict[str, Any]:
    kb = knowledge_base()
    return {"version": kb.version, "topics": kb.topics()}


@router.get("/cite/{citation_id}", summary="A full reference")
def cite(citation_id: str, user: CurrentUser) -> dict[str, Any]:
    ref = load_references().get(citation_id)
    if ref is None:
        raise ProblemError(404, "Not found", f"unknown citation id {citation_id!r}", type_="not-found")
    return {**ref.model_dump(mode="json"), "link": ref.link}


def _examples() -> dict[str, Any]:
    folder = resources.files("regenguide.kb") / "data" / "examples"
    return {e.name.removesuffix(".json"): e for e in folder.iterdir() if e.name.endswith(".json")}


@router.get("/examples", summary="Names of the example plan documents")
def example_names(user: CurrentUser) -> list[str]:
    return sorted(_examples())


@router.get("/examples/{name}", summary="An example plan document (regenguide.plan/1)")
def example(name: str, user: CurrentUser) -> dict[str, Any]:
    entry = _examples().get(name)
    if entry is None:
        raise ProblemError(404, "Not found", f"no example {name!r}; see /api/v1/kb/examples", type_="not-found")
    return json.loads(entry.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@router.get("/{topic}", summary="Entries of one topic (regions, planes, danger_zones, modalities …)")
def show(topic: str, user: CurrentUser) -> list[dict[str, Any]]:
    kb = knowledge_base()
    if topic not in kb.topics():
        raise ProblemError(404, "Not found", f"unknown topic {topic!r}; topics: {', '.join(kb.topics())}",
                           type_="not-found")
    return kb.show(topic)
