"""Environment parity: client, scheduler and workers must run the same pinned versions.

dask only warns on a mismatch and then fails in obscure ways (a task graph
that does not deserialize, a worker that cannot run a function); toppipe
refuses at connect, naming the package, where it differs and the fix.
"""

from __future__ import annotations

#: Packages whose versions must agree everywhere (Python: major.minor only).
CHECKED = ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "toolz", "numpy", "pandas", "pyarrow")

#: What dask's collections import on the workers (dask.dataframe needs pandas and pyarrow): a worker
#: without one the client has is caught at connect, not at the first dataframe.
WORKERS_NEED = ("numpy", "pandas", "pyarrow")

#: What to ask ``Client.get_versions(packages=...)`` for, beyond dask's own list.
ASKED = ("numpy", "pandas", "pyarrow")


def _python(version: str | None) -> str | None:
    return ".".join(version.split(".")[:2]) if version else None


def mismatches(versions: dict) -> list[str]:
    """One line per package that differs, from ``Client.get_versions()``.

    A package missing somewhere (``None``) is not a mismatch, except a package
    of WORKERS_NEED that the client has and a worker lacks; a different version is.
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
    for package in WORKERS_NEED:
        lacking = [place for place, packages in where.items() if place.startswith("worker ") and packages.get(package) is None]
        if where["client"].get(package) is not None and lacking:
            found.append(f"{package}: the client has {where['client'][package]}, {', '.join(lacking)} has none (dask's collections need it there)")
    return found
