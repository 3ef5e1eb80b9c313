"""The docs list the vocabulary and the rules the knowledge base actually holds."""

from __future__ import annotations

from pathlib import Path

from regenguide.kb import knowledge_base

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_plan_document_lists_every_vocabulary_code() -> None:
    text = (DOCS / "plan-document.md").read_text(encoding="utf-8")
    kb = knowledge_base()
    missing = [code for table in (kb.regions, kb.planes, kb.indications) for code in table if code not in text]
    assert missing == [], f"regenerate docs/plan-document.md tables: {missing}"


def test_knowledge_base_doc_lists_every_rule() -> None:
    text = (DOCS / "knowledge-base.md").read_text(encoding="utf-8")
    kb = knowledge_base()
    rules = [f"`{r}`" for r in kb.rules] + [f"`contraindication.{c}`" for c in kb.contraindications]
    assert [r for r in rules if r not in text] == []
