"""SQLite writers queue in process on the engine's lock and between processes on the lock file."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from regenguide.store import db as store_db
from regenguide.store.db import make_engine, transaction


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    path = tmp_path / "queue.db"
    engine = make_engine(f"sqlite:///{path}")
    with transaction(engine) as session:
        session.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        session.execute(text("INSERT INTO counter VALUES (0)"))
    engine.dispose()
    return str(path)


def _count(engine) -> int:  # type: ignore[no-untyped-def]
    with transaction(engine) as session:
        return int(session.execute(text("SELECT n FROM counter")).scalar_one())


def test_concurrent_writers_lose_no_update(sqlite_file: str) -> None:
    engine = make_engine(f"sqlite:///{sqlite_file}")

    def work() -> None:
        for _ in range(25):
            with transaction(engine) as session:  # read-modify-write: lost updates if writers overlapped
                n = session.execute(text("SELECT n FROM counter")).scalar_one()
                session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _count(engine) == 200
    assert Path(sqlite_file + "-writer.lock").exists()


def test_a_failed_transaction_frees_the_queue(sqlite_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_S", 1)
    engine = make_engine(f"sqlite:///{sqlite_file}")
    with pytest.raises(ZeroDivisionError), transaction(engine) as session:
        session.execute(text("UPDATE counter SET n = 99"))
        _ = 1 / 0
    with transaction(engine) as session:  # would time out if the rollback had kept the lock
        session.execute(text("UPDATE counter SET n = n + 1"))
    assert _count(engine) == 1


def test_a_writer_waits_for_another_process_and_gives_up_after_the_timeout(
    sqlite_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(f"sqlite:///{sqlite_file}")
    other = os.open(sqlite_file + "-writer.lock", os.O_RDWR | os.O_CREAT)  # another open file = another process
    fcntl.flock(other, fcntl.LOCK_EX)
    done = threading.Event()

    def write() -> None:
        with transaction(engine) as session:
            session.execute(text("UPDATE counter SET n = n + 1"))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.3), "the write went ahead while another process held the writer lock"
    fcntl.flock(other, fcntl.LOCK_UN)
    writer.join(timeout=10)
    assert done.is_set() and _count(engine) == 1

    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_S", 0.2)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(OperationalError, match="database is locked"), transaction(engine) as session:
            session.execute(text("UPDATE counter SET n = n + 1"))
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    with transaction(engine) as session:  # the refused writer left the in-process queue free
        session.execute(text("UPDATE counter SET n = n + 1"))
    assert _count(engine) == 2
