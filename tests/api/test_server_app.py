"""The application as `regenguide serve` builds it in each worker process: the start-up heap is frozen out of
the cyclic garbage collector, so full collections stay short under load (run in a fresh interpreter, since
freezing is process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import gc, json
from regenguide.api.app import create_server_app
app = create_server_app()
print(json.dumps({"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()), "title": app.title}))
"""


def test_server_app_freezes_the_start_up_heap(tmp_path: Path) -> None:
    env = {**os.environ, "REGENGUIDE_DATA_DIR": str(tmp_path), "REGENGUIDE_SECRET_KEY": "k" * 40,
           "REGENGUIDE_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["title"] == "RegenGuide API"
    # Modules, the app and the knowledge bases: far more than a hundred thousand objects are frozen, and a
    # full collection is left with almost nothing to traverse (unfrozen, it walks them all: ~100 ms).
    assert result["frozen"] > 100_000
    assert result["tracked"] < result["frozen"] / 100
