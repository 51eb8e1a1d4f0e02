"""The run-record store: where pipeline runs and their tasks are remembered.

Two backends behind one URL: ``sqlite:///PATH`` (the local site) and
``postgresql://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=..&passfile=..``
(sites with a db host running containers; the password comes from the
``passfile``, never from the URL). ``python -m toppipe.records init|check URL``
creates or checks the schema; the deploy role uses both, so a second ``up``
changes nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from contextlib import closing, nullcontext

from toppipe.errors import ToppipeError

SCHEMA_VERSION = 6
TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    state TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,
    ended DOUBLE PRECISION,
    provenance TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id TEXT NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    host TEXT,
    started DOUBLE PRECISION,
    ended DOUBLE PRECISION,
    error TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started);
"""
#: Columns added after schema 1 (added to an older store by ``init``).
ADDED_COLUMNS = {
    "runs": (("tasks_total", "INTEGER"), ("error", "TEXT")),
    "tasks": (("slurm_job", "TEXT"), ("attempts", "INTEGER NOT NULL DEFAULT 0"), ("cached", "INTEGER NOT NULL DEFAULT 0"),
              ("cache_key", "TEXT"), ("traceback", "TEXT"), ("dask_key", "TEXT"), ("inputs", "TEXT"),
              ("elements", "INTEGER"), ("pool", "TEXT"), ("partition", "TEXT")),
}  # fmt: skip
#: The agent's own topic: ``{"state": "started", "time"}`` when it starts, before any run of its own.
AGENT_TOPIC = "toppipe-agent"
#: PostgreSQL has no ``user_version``: the schema's version is a row here.
PG_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS toppipe_schema (version INTEGER NOT NULL)"


class RecordsError(ToppipeError):
    """The record store cannot be used."""


def backend(url: str) -> str:
    for prefix, name in (("sqlite:///", "sqlite"), ("postgresql://", "postgresql"), ("postgres://", "postgresql")):
        if url.startswith(prefix):
            return name
    raise RecordsError(f"record store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


def sqlite_path(url: str) -> str:
    if backend(url) != "sqlite":
        raise RecordsError(f"not a sqlite:/// URL: {url!r}")
    return url[len("sqlite:///") :]


def connect(url: str):
    """A DB-API connection to the store (psycopg for PostgreSQL, sqlite3 for SQLite)."""
    if backend(url) == "sqlite":
        return sqlite3.connect(sqlite_path(url))
    import psycopg

    try:
        return psycopg.connect(url, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise RecordsError(f"cannot reach the record store: {str(error).strip()}") from None


def init(url: str) -> None:
    """Create the schema, or bring an older one up to date (idempotent)."""
    if backend(url) == "sqlite":
        with closing(sqlite3.connect(sqlite_path(url))) as db:
            db.executescript(TABLES)
            for table, columns in ADDED_COLUMNS.items():
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("PRAGMA journal_mode = WAL")
            db.commit()
        return
    with closing(connect(url)) as db, db.cursor() as cur:
        for statement in filter(str.strip, TABLES.split(";")):
            cur.execute(statement)
        for table, columns in ADDED_COLUMNS.items():
            for name, kind in columns:
                cur.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}")
        cur.execute(PG_VERSION_TABLE)
        cur.execute("DELETE FROM toppipe_schema")
        cur.execute("INSERT INTO toppipe_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        db.commit()


def is_current(url: str) -> bool:
    """True when the store exists with the current schema."""
    if backend(url) == "sqlite":
        path = sqlite_path(url)
        if not os.path.exists(path):
            return False
        with closing(sqlite3.connect(path)) as db:
            return db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with closing(connect(url)) as db, db.cursor() as cur:
        cur.execute("SELECT to_regclass('toppipe_schema') IS NOT NULL")
        if not cur.fetchone()[0]:
            return False
        cur.execute("SELECT max(version) FROM toppipe_schema")
        return cur.fetchone()[0] == SCHEMA_VERSION


def _pipeline_supported() -> bool:
    """Whether psycopg's libpq can pipeline (14 and later; psycopg-binary bundles one that can)."""
    import psycopg

    return psycopg.Pipeline.is_supported()


class RecordStore:
    """Reads and writes runs and their tasks; one connection, used from one thread."""

    def __init__(self, url: str):
        self.url, self.kind = url, backend(url)
        self.db = connect(url)
        if self.kind == "sqlite":
            self.db.row_factory = sqlite3.Row
        #: Whether :meth:`write` sends a batch's statements in one pipeline: PostgreSQL with a libpq
        #: that can (14 and later; older ones, one round trip per statement; the bench's baseline: off).
        self.pipelined = self.kind == "postgresql" and _pipeline_supported()

    def close(self) -> None:
        self.db.close()

    def _dialect(self, sql: str) -> str:
        """*sql* with this backend's placeholders (``?`` is written; psycopg wants ``%s``)."""
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def _run(self, sql: str, args: tuple = ()) -> list[dict]:
        """The rows of a ``SELECT`` (as dicts); nothing for any other statement, which in a
        pipeline (:meth:`write` on PostgreSQL) is sent without waiting for its result."""
        cur = self.db.cursor()
        try:
            cur.execute(self._dialect(sql), args)
            if not sql.lstrip().upper().startswith("SELECT"):
                return []
            rows = cur.fetchall()  # in a pipeline, waits for this result (and those before it)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, tuple(row))) for row in rows]
        finally:
            cur.close()

    def _many(self, sql: str, rows: list[tuple]) -> None:
        cur = self.db.cursor()
        try:
            cur.executemany(self._dialect(sql), rows)
        finally:
            cur.close()

    def write(self, events: list[tuple[str, dict]]) -> None:
        """Apply ``(topic, message)`` events (see :mod:`toppipe.recorder`) in one transaction.
        Writing the same events again adds no run or task twice (a spool may replay a batch).

        On PostgreSQL the statements go in one pipeline: a map's element costs three statements,
        and one round trip each made the writer fall behind a map of ten thousand fast elements
        (``bench/records_write.py``); an error is raised when the pipeline ends, as before."""
        with self.db.pipeline() if self.pipelined else nullcontext():
            for topic, msg in events:
                if topic == "toppipe-run":
                    self._run_event(msg)
                elif topic == "toppipe-task":
                    self._task_event(msg)
                elif topic == AGENT_TOPIC and msg.get("state") == "started":
                    self.interrupt_unsettled(msg["time"])
                elif topic == AGENT_TOPIC and msg.get("state") == "stopping":
                    self.interrupt_unsettled(msg["time"], f"interrupted: {msg.get('why') or 'the scheduler stopped'}")
        self.db.commit()

    def interrupt_unsettled(self, agent_started: float, error: str | None = None) -> list[str]:
        """Record every run still ``running`` as ``interrupted`` (the agent that ran it stopped), ended
        when it was last seen (its newest event), and its unsettled tasks too; the runs' ids.
        *error* says why (default: the scheduler started again at *agent_started*)."""
        rows = self._run("SELECT r.id, r.started, MAX(t.started) AS task_started, MAX(t.ended) AS task_ended "
                         "FROM runs r LEFT JOIN tasks t ON t.run_id = r.id WHERE r.state = 'running' GROUP BY r.id, r.started")  # fmt: skip
        restarted = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(agent_started))
        for row in rows:
            seen = max(v for v in (row["started"], row["task_started"], row["task_ended"]) if v is not None)
            why = error or f"interrupted: the site's scheduler stopped during the run (it started again at {restarted})"
            self._run("UPDATE runs SET state = 'interrupted', ended = ?, error = ? WHERE id = ?", (seen, why, row["id"]))
            self._run("UPDATE tasks SET state = 'interrupted' WHERE run_id = ? AND state IN ('pending', 'running')", (row["id"],))
        return [row["id"] for row in rows]

    def _run_event(self, msg: dict) -> None:
        if msg["state"] == "started":
            self._run(
                "INSERT INTO runs (id, pipeline, state, started, provenance, tasks_total) VALUES (?, ?, 'running', ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (msg["run"], msg["pipeline"], msg["time"], json.dumps(msg.get("provenance", {}), sort_keys=True), len(msg["tasks"])),
            )
            keys, dask_keys = msg.get("keys", {}), msg.get("dask_keys", {})
            rows = [(msg["run"], name, keys.get(name), dask_keys.get(name)) for name in msg["tasks"]]
            self._many("INSERT INTO tasks (run_id, name, state, attempts, cached, cache_key, dask_key) "
                       "VALUES (?, ?, 'pending', 0, 0, ?, ?) ON CONFLICT DO NOTHING", rows)  # fmt: skip
        else:
            self._run("UPDATE runs SET state = ?, ended = ?, error = ? WHERE id = ?", (msg["state"], msg["time"], msg.get("error"), msg["run"]))

    def _task_event(self, msg: dict) -> None:
        run, task, state, when = msg["run"], msg["task"], msg["state"], msg["time"]
        if task.endswith("]"):  # an element of a map (task[index]): its row is made by its first event
            self._run("INSERT INTO tasks (run_id, name, state, attempts, cached) VALUES (?, ?, 'pending', 0, 0) "
                      "ON CONFLICT DO NOTHING", (run, task))  # fmt: skip
        if state == "running":
            self._run("UPDATE tasks SET state = 'running', host = ?, slurm_job = ?, pool = COALESCE(?, pool), "
                      "partition = COALESCE(?, partition), started = ?, attempts = attempts + 1, error = NULL, traceback = NULL, "
                      "inputs = NULL, elements = COALESCE(?, elements) WHERE run_id = ? AND name = ?",
                      (msg.get("host"), msg.get("slurm_job"), msg.get("pool"), msg.get("partition"), when,
                       _count(msg.get("elements")), run, task))  # fmt: skip
        else:
            # cache_key becomes the result key: what the result was computed from (toppipe.pipeline.cache)
            self._run("UPDATE tasks SET state = ?, ended = ?, cached = ?, error = ?, traceback = ?, inputs = ?, "
                      "cache_key = COALESCE(?, cache_key), elements = COALESCE(?, elements) WHERE run_id = ? AND name = ?",
                      (state, when, int(state == "cached"), msg.get("error"), msg.get("traceback"), msg.get("inputs"),
                       msg.get("result_key"), _count(msg.get("elements")), run, task))  # fmt: skip

    def runs(self, limit: int = 50, offset: int = 0, pipeline: str | None = None, state: str | None = None) -> list[dict]:
        """The most recent runs first, optionally of one *pipeline* or in one *state*."""
        clause, args = self._filters(pipeline, state)
        rows = self._run(f"SELECT * FROM runs {clause}ORDER BY started DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        for row in rows:
            row["provenance"] = json.loads(row["provenance"] or "{}")
        return rows

    def count_runs(self, pipeline: str | None = None, state: str | None = None) -> int:
        where, args = self._filters(pipeline, state)
        return int(self._run(f"SELECT count(*) AS n FROM runs {where}", tuple(args))[0]["n"])

    @staticmethod
    def _filters(pipeline: str | None, state: str | None) -> tuple[str, list]:
        where, args = [], []
        for column, value in (("pipeline", pipeline), ("state", state)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        return (f"WHERE {' AND '.join(where)} " if where else ""), args

    def run(self, run_id: str) -> dict | None:
        rows = self._run("SELECT * FROM runs WHERE id = ?", (run_id,))
        if rows:
            rows[0]["provenance"] = json.loads(rows[0]["provenance"] or "{}")
        return rows[0] if rows else None

    def task(self, run_id: str, name: str) -> dict | None:
        """One task or element row (``name`` as recorded: ``clean[3]`` for an element), or None."""
        rows = self._run("SELECT * FROM tasks WHERE run_id = ? AND name = ?", (run_id, name))
        return rows[0] if rows else None

    def tasks(self, run_id: str, elements: bool = True, state: str | None = None, limit: int | None = None) -> list[dict]:
        """The run's task rows (without its maps' elements if not *elements*; only those in *state*,
        at most *limit*, if given)."""
        where, args = ["run_id = ?"], [run_id]
        if not elements:
            where.append(f"NOT {IS_ELEMENT}")
        if state is not None:
            where.append("state = ?")
            args.append(state)
        page = "" if limit is None else f" LIMIT {int(limit)}"
        return self._run(f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY started IS NULL, started, name{page}", tuple(args))

    def element_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Task -> state -> how many of its map's elements are in it: one ``GROUP BY``, whatever the
        number of elements (see :mod:`toppipe.pipeline.summary`)."""
        task = "split_part(name, '[', 1)" if self.kind == "postgresql" else "substr(name, 1, instr(name, '[') - 1)"
        rows = self._run(f"SELECT {task} AS task, state, count(*) AS n FROM tasks WHERE run_id = ? AND {IS_ELEMENT} "
                         "GROUP BY 1, 2", (run_id,))  # fmt: skip
        found: dict[str, dict[str, int]] = {}
        for row in rows:
            found.setdefault(row["task"], {})[row["state"]] = int(row["n"])
        return found

    def elements(self, run_id: str, task: str, state: str | tuple[str, ...] | None = None, limit: int | None = 50,
                 offset: int = 0) -> list[dict]:  # fmt: skip
        """The rows of *task*'s elements in index order (each with its ``index``), those in *state*
        (one or a tuple) if given, one page of *limit* from *offset* (None: all)."""
        prefix = f"{task}["
        where, args = ["run_id = ?", "substr(name, 1, ?) = ?", IS_ELEMENT], [run_id, len(prefix), prefix]
        if state is not None:
            states = (state,) if isinstance(state, str) else tuple(state)
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += states
        page = "" if limit is None else " LIMIT ? OFFSET ?"
        rows = self._run(f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY length(name), name{page}",
                         tuple(args) + (() if limit is None else (limit, offset)))  # fmt: skip
        for row in rows:
            row["index"] = int(row["name"][len(prefix) : -1])
        return rows


#: True for a map's element (``task[index]``): no task's name ends with ``]``.
IS_ELEMENT = "substr(name, length(name), 1) = ']'"


def _count(value) -> int | None:
    """An element count from a message (None unless an int)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("init", "check"):
        print("usage: python -m toppipe.records init|check URL", file=sys.stderr)
        return 2
    command, url = argv
    try:
        if command == "init":
            init(url)
            return 0
        return 0 if is_current(url) else 1
    except RecordsError as error:
        print(f"records: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
