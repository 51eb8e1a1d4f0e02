"""Environment parity: client, scheduler and workers must run the same pinned versions.

dask only warns on a mismatch and then fails in obscure ways (a task graph
that does not deserialize, a worker that cannot run a function); toppipe
refuses at connect, naming the package, where it differs and the fix.
"""

from __future__ import annotations

#: Packages whose versions must agree everywhere (Python: major.minor only).
CHECKED = ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "numpy", "pandas")


def _python(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else None


def mismatches(versions: dict) -> list[str]:
    """One line per package that differs, from ``Client.get_versions()``.

    Workers that lack a package optional to the client (``None``) are not a
    mismatch; a different version is.
    """
    where = {"client": versions["client"]["packages"], "scheduler": versions["scheduler"]["packages"]}
    where.update({f"worker {address}": info["packages"] for address, info in sorted(versions.get("workers", {}).items())})
    found = []
    for package in ("python", *CHECKED):
        seen = {}
        for place, packages in where.items():
            version = packages.get(package)
            if package == "python":
                version = _python(version)
            if version is not None:
                seen[place] = version
        if len(set(seen.values())) > 1:
            expected = seen.get("client")
            odd = ", ".join(f"{place} has {v}" for place, v in seen.items() if v != expected)
            found.append(f"{package}: the client has {expected}, {odd}")
    return found
