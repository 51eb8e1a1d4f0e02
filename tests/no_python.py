"""A PATH without Python: this machine's programs, less every ``python*``, and stand-ins for
``python`` and ``python3`` that only log that they were called (a desktop's other Pythons)."""

from __future__ import annotations

import os
from pathlib import Path

LOGGED = ("python", "python3")


def no_python_path(folder: Path, without: tuple[str, ...] = ()) -> str:
    """A PATH of one folder, *folder*``/bin`` (made here), with neither Python nor the programs *without*;
    the stand-ins log to ``folder/host-python.log``."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    for source in ("/usr/local/bin", "/usr/bin", "/bin"):
        for program in sorted(Path(source).iterdir()) if Path(source).is_dir() else ():
            target = bin_dir / program.name
            wanted = not program.name.startswith("python") and program.name not in without
            if wanted and not target.exists() and os.access(program, os.X_OK):
                target.symlink_to(program)
    for name in LOGGED:
        (bin_dir / name).write_text(f'#!/bin/sh\necho "$0 $*" >> {folder}/host-python.log\nexit 127\n')
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def host_python_calls(folder: Path) -> str:
    """What the stand-ins logged: empty when no host Python was called."""
    log = folder / "host-python.log"
    return log.read_text() if log.exists() else ""
