"""Deploy engines behind one interface; each is imported only when used.

``site`` (the default) runs toppipe's own roles with pyinfra and Ansible-layout
roles with ansible-runner; ``pyinfra`` and ``ansible`` are the two engines alone.
"""

from deploy.engine.base import ActionResult, Engine, Outcome, Progress, RunReport

ENGINES = ("site", "pyinfra", "ansible")


def get_engine(name: str = "site") -> Engine:
    """The engine called *name* (imported on first use: pyinfra and ansible-runner are slow to import)."""
    if name == "site":
        from deploy.engine.site_engine import SiteEngine

        return SiteEngine()
    if name == "pyinfra":
        from deploy.engine.pyinfra_engine import PyinfraEngine

        return PyinfraEngine()
    if name == "ansible":
        from deploy.engine.ansible_engine import AnsibleEngine

        return AnsibleEngine()
    raise ValueError(f"unknown engine {name!r}; one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "ActionResult", "Engine", "Outcome", "Progress", "RunReport", "get_engine"]
