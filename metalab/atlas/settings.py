"""How Atlas is told where its database is: one JSON document on standard input.

Reading credentials from stdin keeps them off the command line, out of the environment
and off disk; the process that starts Atlas writes the document and closes the pipe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any

from ..secret import Secret

__all__ = ["AtlasSettings", "read_settings", "settings_document"]


@dataclass(frozen=True, kw_only=True)
class AtlasSettings:
    db_host: str
    db_port: int
    db_user: str
    db_name: str
    db_password: Secret
    file_root: str | None = None
    token: Secret | None = None

    def conninfo(self) -> str:
        """A libpq keyword string; built only inside Atlas, never printed."""
        parts = {
            "host": self.db_host,
            "port": str(self.db_port),
            "user": self.db_user,
            "dbname": self.db_name,
            "password": self.db_password.reveal(),
            "connect_timeout": "3",
            "application_name": "metalab-atlas",
            # Atlas only reads: the server refuses any write from these sessions.
            # work_mem: a plot groups 100,000 runs in memory rather than sorting them on disk.
            # jit off: every statement is done in milliseconds, and compiling one whose estimated
            # cost passes jit_above_cost took 0.3 s (the experiments list, measured).
            "options": "-c default_transaction_read_only=on -c statement_timeout=60s -c work_mem=32MB -c jit=off",
        }
        return " ".join(f"{key}='{_escape(value)}'" for key, value in parts.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def settings_document(settings: AtlasSettings) -> str:
    """Serialize for the pipe (the only place the password is written out)."""
    data: dict[str, Any] = {
        "db_host": settings.db_host,
        "db_port": settings.db_port,
        "db_user": settings.db_user,
        "db_name": settings.db_name,
        "db_password": settings.db_password.reveal(),
        "file_root": settings.file_root,
        "token": settings.token.reveal() if settings.token else None,
    }
    return json.dumps(data)


def read_settings(stream: IO[str]) -> AtlasSettings:
    data = json.loads(stream.readline())
    return AtlasSettings(
        db_host=data["db_host"],
        db_port=int(data["db_port"]),
        db_user=data["db_user"],
        db_name=data["db_name"],
        db_password=Secret(data["db_password"]),
        file_root=data.get("file_root"),
        token=Secret(data["token"]) if data.get("token") else None,
    )
