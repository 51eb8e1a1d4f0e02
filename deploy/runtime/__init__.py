"""Container runtimes: ``native`` (supervised processes) and ``apptainer`` (one instance per service)."""

from deploy import UserError
from deploy.runtime.apptainer import ApptainerRuntime, Instance, parse_instance_list
from deploy.runtime.base import Runtime, ServiceState, State, Step, next_step, refusal
from deploy.runtime.native import NativeRuntime

_RUNTIMES: dict[str, type[Runtime]] = {"native": NativeRuntime, "apptainer": ApptainerRuntime}


def get_runtime(name: str) -> Runtime:
    """The runtime registered under *name*."""
    try:
        return _RUNTIMES[name]()
    except KeyError:
        raise UserError(
            f"runtime '{name}' is not available yet; set toppipe.runtime: native in the inventory"
        ) from None


def runtime_for(host, spec) -> Runtime:
    """The runtime that runs *spec* on *host*: the spec's own, else the host's."""
    return get_runtime(spec.runtime or host.runtime)


__all__ = ["runtime_for", "ApptainerRuntime", "Instance", "NativeRuntime", "parse_instance_list", "Runtime", "ServiceState", "State", "Step", "get_runtime", "next_step", "refusal"]
