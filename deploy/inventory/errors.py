"""The inventory's one error type."""

from __future__ import annotations

from pathlib import Path

from deploy import UserError


class InventoryError(UserError):
    """An inventory that cannot be used: names the file, the key and the fix."""

    def __init__(self, file: Path | str, key: str, problem: str):
        self.file = Path(file)
        self.key = key
        self.problem = problem
        where = f"{_display(self.file)}: {key}: " if key else f"{_display(self.file)}: "
        # One line, always: a value from the YAML may hold line breaks.
        super().__init__((where + problem).replace("\r", "\\r").replace("\n", "\\n"))


def _display(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
