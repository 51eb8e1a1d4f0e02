"""Private files: written atomically, readable by their owner only."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def private_dir(path: Path) -> Path:
    """Create *path* (and parents) with mode 0700 on the folders it creates."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
    return path


def write_private(path: Path, data: bytes | str) -> None:
    """Replace *path* atomically with *data*, mode 0600 from the first byte."""
    private_dir(path.parent)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(path: Path, value: Any) -> None:
    write_private(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
