"""The audit chain detects tampering done directly in the database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from regenguide.store.audit import AuditRecord, append, verify
from regenguide.store.db import transaction


def _fill(engine: Any, n: int = 5) -> None:
    with transaction(engine) as db:
        append(db, [AuditRecord(username="u", action="read", resource="patients", resource_id=i, patient_id=i)
                    for i in range(1, n + 1)])


def _drop_guards(engine: Any) -> None:
    """What an attacker with database access would do first."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))


def test_intact_chain_verifies(engine: Any) -> None:
    _fill(engine)
    with transaction(engine) as db:
        result = verify(db)
    assert result.ok and result.checked == 5


def test_database_refuses_update_and_delete(engine: Any) -> None:
    _fill(engine)
    for sql in ("UPDATE audit_log SET username = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))


@pytest.mark.parametrize(
    ("tamper", "broken"),
    [
        ("UPDATE audit_log SET username = 'mallory' WHERE seq = 3", 3),
        ("UPDATE audit_log SET action = 'list' WHERE seq = 1", 1),
        ("DELETE FROM audit_log WHERE seq = 2", 2),
        ("DELETE FROM audit_log WHERE seq = 5", 5),
    ],
)
def test_tampering_is_detected_at_the_first_broken_entry(engine: Any, tamper: str, broken: int) -> None:
    _fill(engine)
    _drop_guards(engine)
    with engine.begin() as conn:
        conn.execute(text(tamper))
    with transaction(engine) as db:
        result = verify(db)
    assert not result.ok
    assert result.first_broken_seq == broken


def test_cli_verify_exit_codes(engine: Any, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from regenguide.cli import app
    from regenguide.config import get_settings

    monkeypatch.setenv("REGENGUIDE_DATABASE_URL", db_url)
    get_settings.cache_clear()
    _fill(engine)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output
    _drop_guards(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET resource = 'users' WHERE seq = 4"))
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1
    assert "entry 4" in bad.output
    get_settings.cache_clear()


def test_concurrent_appends_from_many_threads_form_one_chain(engine: Any) -> None:
    """Writers in parallel (each its own transaction, one to three entries) queue on the head row: the
    sequence has no gap or duplicate and the chain verifies (on SQLite through `BEGIN IMMEDIATE`, on
    PostgreSQL through `SELECT … FOR UPDATE` of the head)."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import select

    from regenguide.store.models import AuditEntry

    def write(i: int) -> int:
        with transaction(engine) as db:
            return append(db, [AuditRecord(username=f"u{i}", action="read", resource="patients", resource_id=i,
                                           patient_id=j) for j in range(1 + i % 3)])

    with ThreadPoolExecutor(12) as pool:
        last_seqs = list(pool.map(write, range(120)))
    expected = sum(1 + i % 3 for i in range(120))
    assert len(set(last_seqs)) == 120 and max(last_seqs) == expected
    with transaction(engine) as db:
        seqs = list(db.execute(select(AuditEntry.seq).order_by(AuditEntry.seq)).scalars())
        assert seqs == list(range(1, expected + 1))
        result = verify(db)
    assert result.ok and result.checked == expected


def _append_in_own_process(db_url: str, worker: int, n: int) -> None:
    """One server worker: its own engine (process, pool), appending n single-entry transactions."""
    from regenguide.store.db import make_engine

    engine = make_engine(db_url)
    try:
        for i in range(n):
            with transaction(engine) as db:
                append(db, AuditRecord(username=f"w{worker}", action="read", resource="patients", resource_id=i))
    finally:
        engine.dispose()


def test_appends_from_several_processes_form_one_chain(engine: Any, db_url: str) -> None:
    """What several `regenguide serve` workers do: processes with their own engines append at once; the
    chain has every entry once and verifies."""
    import multiprocessing
    import site
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])  # so that the workers can import this test module
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn"), initializer=site.addsitedir,
                             initargs=(root,)) as pool:
        for f in [pool.submit(_append_in_own_process, db_url, w, 40) for w in range(3)]:
            f.result()
    with transaction(engine) as db:
        result = verify(db)
    assert result.ok and result.checked == 120


def test_group_commit_batches_concurrent_reads_into_one_chain(engine: Any) -> None:
    """Many threads audit through one GroupCommit: every record is stored exactly once, in one intact
    chain, and each caller returns only once its own record is committed."""
    import threading

    from regenguide.store.audit import GroupCommit

    committer = GroupCommit(engine)
    start = threading.Barrier(16)
    seen_committed: list[bool] = []

    def work(i: int) -> None:
        start.wait()
        for j in range(10):
            committer.append([AuditRecord(username="u", action="read", resource="patient", resource_id=f"{i}-{j}")])
            with transaction(engine) as db:  # committed before append returned
                n = db.execute(text("SELECT count(*) FROM audit_log WHERE resource_id = :r"),
                               {"r": f"{i}-{j}"}).scalar_one()
            seen_committed.append(n == 1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(seen_committed) and len(seen_committed) == 160
    with transaction(engine) as db:
        ids = [r[0] for r in db.execute(text("SELECT resource_id FROM audit_log WHERE username = 'u'"))]
        assert sorted(ids) == sorted(f"{i}-{j}" for i in range(16) for j in range(10))
        assert verify(db).ok


def test_group_commit_failure_fails_only_its_caller(engine: Any) -> None:
    from regenguide.store.audit import GroupCommit

    committer = GroupCommit(engine)
    with pytest.raises(ValueError, match="unknown audit action"):
        committer.append([AuditRecord(username="u", action="peek", resource="patient")])
    committer.append([AuditRecord(username="u", action="read", resource="patient", resource_id="ok")])
    with transaction(engine) as db:
        rows = db.execute(text("SELECT resource_id FROM audit_log WHERE username = 'u'")).all()
        assert [r[0] for r in rows] == ["ok"] and verify(db).ok


def test_group_commit_batch_with_a_bad_record_commits_the_others(engine: Any) -> None:
    from concurrent.futures import Future

    from regenguide.store.audit import GroupCommit

    committer = GroupCommit(engine)
    bad: Future[object] = Future()
    good: Future[object] = Future()
    leader: Future[object] = Future()
    committer._pending = [  # three callers waiting in one batch, as under load
        ([AuditRecord(username="u", action="read", resource="patient", resource_id="a")], leader),
        ([AuditRecord(username="u", action="peek", resource="patient")], bad),
        ([AuditRecord(username="u", action="read", resource="patient", resource_id="b")], good),
    ]
    committer._leading = True
    committer._write_one_batch(leader)
    assert good.result() is None
    with pytest.raises(ValueError, match="unknown audit action"):
        bad.result()
    assert committer._leading is False and committer._pending == []
    with transaction(engine) as db:
        rows = db.execute(text("SELECT resource_id FROM audit_log WHERE username = 'u' ORDER BY seq")).all()
        assert [r[0] for r in rows] == ["a", "b"] and verify(db).ok
