"""What a check run returns: one frozen result per (host, role, check), and its table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    """One health check of one host: passed (``ok``) or not, and why in a few words."""

    host: str
    role: str
    check: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class CheckReport:
    """Every result of one check run, in host order."""

    results: tuple[CheckResult, ...]

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def ok(self) -> bool:
        return bool(self.results) and not self.failed

    def summary(self) -> str:
        """``N checks passed`` or ``N of M checks failed``."""
        total, failed = len(self.results), len(self.failed)
        if not failed and total:
            return f"{total} check{'s' * (total != 1)} passed"
        return f"{failed} of {total} checks failed"


HEADER = ("host", "role", "check", "result", "detail")


def table(results: tuple[CheckResult, ...] | list[CheckResult]) -> list[str]:
    """Aligned lines (a header, then one per result) for a terminal; the last column is free width."""
    rows = [HEADER] + [(r.host, r.role, r.check, "ok" if r.ok else "FAILED", r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    return [("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip() for row in rows]
