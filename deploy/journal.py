"""A record of every deploy command, under ``<state>/deploys/<id>/``.

``inputs.json`` (command, inventory, its digest, versions), ``events.jsonl``
(one line per finished action, appended as the run goes) and, at the end,
``status.json`` (outcome, counts per host, exit code). ``status`` and the
dashboard read these; files are private.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.engine import ActionResult, RunReport
from deploy.files import private_dir, read_json, write_json
from deploy.inventory import Site


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def inventory_digest(site: Site) -> str:
    """A hash over every file of the inventory folder."""
    digest = hashlib.sha256()
    folder = site.inventory.parent
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class Journal:
    folder: Path

    @classmethod
    def start(cls, site: Site, command: str, options: dict) -> Journal:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
        folder = private_dir(site.state_dir / "deploys" / f"{stamp}-{command}")
        write_json(
            folder / "inputs.json",
            {
                "command": command,
                "options": options,
                "inventory": str(site.inventory.parent.resolve()),
                "inventory_digest": inventory_digest(site),
                "user": getpass.getuser(),
                "python": platform.python_version(),
                "started": time.time(),
            },
        )
        (folder / "events.jsonl").touch(mode=0o600)
        return cls(folder)

    def event(self, result: ActionResult) -> None:
        line = {
            "time": time.time(),
            "host": result.action.host,
            "role": result.action.role,
            "what": result.action.resource.describe(),
            "outcome": result.outcome.value,
            "message": result.message,
        }
        private_dir(self.folder)  # down --purge may have removed the state folder meanwhile
        with open(self.folder / "events.jsonl", "a", opener=_private_opener) as handle:
            handle.write(json.dumps(line) + "\n")

    def finish(self, exit_code: int, report: RunReport | None, error: str = "") -> None:
        private_dir(self.folder)
        counts = {}
        if report is not None:
            counts = {host: {o.value: n for o, n in row.items()} for host, row in report.per_host().items()}
        write_json(
            self.folder / "status.json",
            {
                "exit_code": exit_code,
                "ok": exit_code == 0,
                "error": error,
                "per_host": counts,
                "unreachable": report.unreachable if report else {},
                "ended": time.time(),
            },
        )


def latest(site: Site, command: str | None = None) -> dict | None:
    """The newest finished journal (optionally of one command), inputs and status merged."""
    folder = site.state_dir / "deploys"
    if not folder.is_dir():
        return None
    for entry in sorted(folder.iterdir(), reverse=True):
        # a journal without its inputs is one that down --purge cut short while it was written
        if not (entry / "status.json").is_file() or not (entry / "inputs.json").is_file():
            continue
        inputs = read_json(entry / "inputs.json")
        if command and inputs.get("command") != command:
            continue
        return {"id": entry.name, **inputs, **read_json(entry / "status.json")}
    return None
