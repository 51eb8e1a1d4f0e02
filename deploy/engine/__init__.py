"""Deploy engines behind one interface; each is imported only when used."""

from deploy.engine.base import ActionResult, Engine, Outcome, Progress, RunReport


def get_engine(name: str = "pyinfra") -> Engine:
    """The engine called *name* (imports it on first use: pyinfra is slow to import)."""
    if name == "pyinfra":
        from deploy.engine.pyinfra_engine import PyinfraEngine

        return PyinfraEngine()
    raise ValueError(f"unknown engine {name!r}")


__all__ = ["ActionResult", "Engine", "Outcome", "Progress", "RunReport", "get_engine"]
