"""Container runtimes: ``native`` (supervised processes); ``apptainer`` comes next."""

from deploy import UserError
from deploy.runtime.base import Runtime, ServiceState, State
from deploy.runtime.native import NativeRuntime

_RUNTIMES: dict[str, type[Runtime]] = {"native": NativeRuntime}


def get_runtime(name: str) -> Runtime:
    """The runtime registered under *name*."""
    try:
        return _RUNTIMES[name]()
    except KeyError:
        raise UserError(
            f"runtime '{name}' is not available yet; set toppipe.runtime: native in the inventory"
        ) from None


__all__ = ["NativeRuntime", "Runtime", "ServiceState", "State", "get_runtime"]
