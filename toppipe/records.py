"""The run-record store: where pipeline runs and their tasks are remembered.

``python -m toppipe.records init|check URL`` creates or checks the schema;
the deploy role uses both so a second ``up`` changes nothing.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from contextlib import closing

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    provenance TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    host TEXT,
    started REAL,
    ended REAL,
    error TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""


class RecordsError(Exception):
    """The record store cannot be used."""


def sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise RecordsError(f"only sqlite:/// URLs are supported here, got {url!r}")
    return url[len("sqlite:///") :]


def init(url: str) -> None:
    """Create the schema (idempotent)."""
    with closing(sqlite3.connect(sqlite_path(url))) as db:
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("PRAGMA journal_mode = WAL")
        db.commit()


def is_current(url: str) -> bool:
    """True when the store exists with the current schema."""
    path = sqlite_path(url)
    if not os.path.exists(path):
        return False
    with closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("init", "check"):
        print("usage: python -m toppipe.records init|check URL", file=sys.stderr)
        return 2
    command, url = argv
    if command == "init":
        init(url)
        return 0
    return 0 if is_current(url) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
