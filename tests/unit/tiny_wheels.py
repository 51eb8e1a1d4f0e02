"""Tiny wheels written by hand, and a local package index that serves them (no network)."""

from __future__ import annotations

import base64
import hashlib
import shutil
import zipfile
from pathlib import Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_wheel(folder: Path, name: str, version: str, code: str = "") -> Path:
    """``<name>-<version>-py3-none-any.whl`` in *folder*: one module that knows its version, plus *code*."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n{code}',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: toppipe-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def simple_index(folder: Path, wheels: list[Path]) -> str:
    """A PEP 503 index of *wheels* in *folder*; returns its ``file://`` URL."""
    projects: dict[str, list[Path]] = {}
    for wheel in wheels:
        projects.setdefault(wheel.name.split("-")[0].replace("_", "-").lower(), []).append(wheel)
    for project, files in projects.items():
        (folder / project).mkdir(parents=True, exist_ok=True)
        links = []
        for wheel in files:
            shutil.copy(wheel, folder / project / wheel.name)
            links.append(f'<a href="{wheel.name}#sha256={sha256(wheel)}">{wheel.name}</a>')
        (folder / project / "index.html").write_text("<!DOCTYPE html>\n" + "\n".join(links) + "\n")
    root_links = "\n".join(f'<a href="{p}/">{p}</a>' for p in sorted(projects))
    (folder / "index.html").write_text("<!DOCTYPE html>\n" + root_links + "\n")
    return folder.as_uri()
