"""Engines and sessions for the two supported databases.

SQLite (embedded default) runs in WAL mode with foreign keys on, and every transaction starts with
`BEGIN IMMEDIATE`: almost every request appends to the audit chain, so taking the write lock up front
turns concurrent writers into an orderly queue (bounded by `busy_timeout`) instead of failing with
"database is locked" when a deferred transaction tries to upgrade. PostgreSQL is used when
`REGENGUIDE_DATABASE_URL` points to one (psycopg 3 driver).

Within one process, SQLite writers also queue on a lock of the engine's own before `BEGIN IMMEDIATE`
(`_WriterQueue`): SQLite's busy handler makes a waiting writer sleep and poll (1, 2, 5 … 100 ms), so under
load a writer that just missed the lock sleeps long after it was freed and the latency tail grows to
seconds. The lock wakes the next writer as soon as the last one commits or rolls back. Between processes
(several server workers, a CLI beside the server) the queue's holder also takes an advisory `flock` on a
file beside the database (`<database>-writer.lock`), polled every half millisecond: one waiter per
process, woken within a millisecond of the release, instead of SQLite's escalating sleeps.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from regenguide.config import get_settings

try:  # POSIX; elsewhere SQLite's busy handler alone arbitrates between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def normalise_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


BUSY_TIMEOUT_S = 30


class _WriterQueue:
    """One write transaction at a time per engine, in this process. A plain Lock (not an RLock): FastAPI
    may enter a request's session in one worker thread and close it in another. Which connections hold it
    is tracked by the id of their DBAPI connection, so a rollback of a connection that never began a write
    releases nothing."""

    def __init__(self, lock_file: str | None = None) -> None:
        self._lock = threading.Lock()
        self._holder: int | None = None
        self._lock_file = lock_file
        self._fd: int | None = None

    def _lock_other_processes(self, deadline: float) -> bool:
        if self._lock_file is None or fcntl is None:
            return True
        if self._fd is None:
            self._fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.0005)

    @staticmethod
    def _key(connection: Any) -> int:
        # SQLAlchemy hands the dialect either the pool's proxy or the raw DBAPI connection.
        return id(getattr(connection, "dbapi_connection", None) or connection)

    def acquire(self, dbapi_connection: Any) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        if not self._lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise self._busy()
        if not self._lock_other_processes(deadline):
            self._lock.release()
            raise self._busy()
        self._holder = self._key(dbapi_connection)

    @staticmethod
    def _busy() -> exc.OperationalError:
        return exc.OperationalError("BEGIN IMMEDIATE", None, Exception(
            f"database is locked: no write transaction became free within {BUSY_TIMEOUT_S} s"))

    def release(self, dbapi_connection: Any) -> None:
        if self._holder is not None and self._holder == self._key(dbapi_connection):
            self._holder = None
            if self._fd is not None and fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._lock.release()


def _queue_writers(engine: Engine) -> _WriterQueue:
    database = engine.url.database
    in_memory = _in_memory(engine.url.render_as_string(hide_password=False))
    queue = _WriterQueue(None if in_memory or not database else f"{os.path.abspath(database)}-writer.lock")
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            queue.release(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            queue.release(dbapi_connection)

    # Instance attributes on this engine's own dialect object (create_engine makes one per engine).
    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    return queue


def _configure_sqlite(engine: Engine, begin: str = "BEGIN IMMEDIATE") -> None:
    queue = _queue_writers(engine) if begin == "BEGIN IMMEDIATE" else None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if queue is not None:
            queue.acquire(dbapi_connection)
        try:
            conn.exec_driver_sql(begin)
        except BaseException:
            if queue is not None:
                queue.release(dbapi_connection)
            raise


def _in_memory(url: str) -> bool:
    database = make_url(url).database
    return not database or database == ":memory:" or "mode=memory" in url


def make_engine(url: str | None = None, *, read_only: bool = False) -> Engine:
    """An engine for the URL. `read_only` (SQLite): transactions begin deferred, so readers run in
    parallel on WAL snapshots instead of queueing for the write lock; such an engine must not write."""
    url = normalise_url(url or get_settings().resolved_database_url())
    if url.startswith("sqlite"):
        # The pool must not be what requests queue on: the server runs sync routes on up to 40 threads
        # (anyio's default), each holding at most one connection of each engine; SQLite connections are
        # cheap. An in-memory database keeps SQLAlchemy's own (single-connection) pool.
        pool = {} if _in_memory(url) else {"pool_size": 8, "max_overflow": 56, "pool_timeout": 60}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
        _configure_sqlite(engine, "BEGIN" if read_only else "BEGIN IMMEDIATE")
    else:
        engine = create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
    return engine


@cache
def get_engine(url: str | None = None) -> Engine:
    return make_engine(url)


@cache
def _factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return _factory(engine or get_engine())


@contextmanager
def transaction(engine: Engine | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back everything on any error."""
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
