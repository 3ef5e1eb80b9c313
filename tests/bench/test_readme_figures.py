"""The README's benchmark table is the committed JSON results, rendered by bench/summary.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _summary():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_summary", ROOT / "bench" / "summary.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_matches_committed_results() -> None:
    summary = _summary()
    readme = (ROOT / "README.md").read_text()
    assert readme == summary.readme_with_table(readme), "run: .venv/bin/python bench/summary.py --readme"


def test_every_results_file_is_summarised() -> None:
    summary = _summary()
    covered = {name for name, _ in summary.SECTIONS}
    on_disk = {p.stem for p in (ROOT / "bench" / "results").glob("*.json")}
    assert on_disk <= covered, f"bench/summary.py does not summarise {sorted(on_disk - covered)}"
    table = summary.table()
    for name in on_disk:
        assert f"bench/results/{name}.json" in table
