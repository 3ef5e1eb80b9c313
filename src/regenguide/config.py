"""Settings, read once from the environment (prefix `REGENGUIDE_`)."""

from __future__ import annotations

import os
import secrets
from functools import cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REGENGUIDE_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="where the embedded database, images and keys live")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is an embedded SQLite file in data_dir"
    )
    secret_key: str | None = Field(default=None, description="token signing key; generated and kept in data_dir")
    token_minutes: int = Field(default=8 * 60, ge=1, le=7 * 24 * 60)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int | None = Field(
        default=None, ge=1, le=64,
        description="server worker processes; default one per CPU core, at most 4 (one for an in-memory database)",
    )

    def resolved_workers(self) -> int:
        """Worker processes for `regenguide serve`. Several are sound on both databases: SQLite in WAL mode
        serves readers of several processes in parallel and its write lock is database-wide, so audit
        appends (`BEGIN IMMEDIATE`, then the head row) queue across processes as they do across threads;
        PostgreSQL queues them on the locked head row. An in-memory SQLite database exists per process, so
        it gets one worker."""
        url = self.resolved_database_url()
        if url.startswith("sqlite") and (":memory:" in url or "mode=memory" in url or url.rstrip("/") == "sqlite:"):
            return 1
        if self.workers is not None:
            return self.workers
        return max(1, min(os.cpu_count() or 1, 4))

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'regenguide.db').resolve()}"

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.data_dir / "secret.key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(48), encoding="utf-8")
            key_file.chmod(0o600)
        return key_file.read_text(encoding="utf-8").strip()

    @property
    def image_dir(self) -> Path:
        return self.data_dir / "images"


@cache
def get_settings() -> Settings:
    return Settings()
