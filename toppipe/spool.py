"""The recorder's backlog on disk: events waiting for the record store, in order.

While the store is away the recorder appends each batch here (one JSON line
per ``[topic, message]``, an fsync per batch), and when it is back it writes
them to the store in order, noting after each committed chunk how far it got
(``offset``, replaced atomically). A drained spool is cut back to empty. The
file is bounded in size: events that do not fit are dropped and counted (the
recorder says so in its log). An agent that dies leaves the spool to the next
one, which drains it first. Files are private (0600) in a private folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: The default bound of the spool file (about 300,000 events of a few hundred bytes).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class Spool:
    """An append-only, size-bounded file of ``(topic, message)`` events, read back in order."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path, self._offset_path = self.folder / "events.jsonl", self.folder / "offset"
        self.max_bytes = max_bytes
        self._size = self._whole_lines()
        self._offset = self._read_offset()

    def _whole_lines(self) -> int:
        """The file's size, after cutting off a last line that a crash left unfinished."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
            return data.rfind(b"\n") + 1
        return len(data)

    def _read_offset(self) -> int:
        try:
            offset = int(self._offset_path.read_text())
        except (OSError, ValueError):
            return 0
        return offset if 0 <= offset <= self._size else 0  # cut short while emptied: start over

    @property
    def empty(self) -> bool:
        return self._offset >= self._size

    @property
    def size(self) -> int:
        """Bytes in the file (written and not yet written to the store)."""
        return self._size

    def append(self, events: list[tuple[str, dict]]) -> int:
        """Add *events* at the end, synced to disk; how many did not fit the bound (dropped)."""
        lines, size = [], self._size
        for topic, msg in events:
            line = (json.dumps([topic, msg], separators=(",", ":"), default=str) + "\n").encode()
            if size + len(line) > self.max_bytes:
                break
            lines.append(line)
            size += len(line)
        if lines:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._size = size
        return len(events) - len(lines)

    def read(self, limit: int) -> tuple[list[tuple[str, dict]], int]:
        """Up to *limit* of the oldest events not yet written, and the offset just after them."""
        events, offset = [], self._offset
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            while len(events) < limit:
                line = handle.readline()
                if not line.endswith(b"\n"):  # the end, or a line cut short by a crash: not an event
                    break
                offset += len(line)
                try:
                    topic, msg = json.loads(line)
                except ValueError:  # not ours, or damaged: skipped rather than blocking every event after it
                    continue
                events.append((topic, msg))
        return events, offset

    def acknowledge(self, offset: int) -> None:
        """The events before *offset* are in the store; an empty spool is cut back to nothing."""
        if offset >= self._size:
            with open(self.path, "r+b") as handle:
                handle.truncate(0)
                os.fsync(handle.fileno())
            self._size, offset = 0, 0
        temporary = self._offset_path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, str(offset).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._offset_path)
        self._offset = offset
