"""Which actions an engine may run side by side on a host: pure logic, no engine in it.

A host's actions run in their order, one after the other, except that the
consecutive :class:`~deploy.resources.Service` actions of a host form one batch,
whose services start (or stop) side by side: a started service waits only for
the earlier services of its batch it names in ``ServiceSpec.after``. Any other
action is a barrier: it runs once everything before it on its host has ended.
"""

from __future__ import annotations

from deploy.resources import Action, Service


def host_batches(actions: list[Action]) -> list[list[Action]]:
    """*actions* cut into groups, in the order of each group's first action: a group is one
    action, or the consecutive Service actions of one host (in that host's own sequence)."""
    groups: list[list[Action]] = []
    open_batch: dict[str, list[Action]] = {}
    for action in actions:
        if not isinstance(action.resource, Service):
            open_batch.pop(action.host, None)
            groups.append([action])
        elif action.host in open_batch:
            open_batch[action.host].append(action)
        else:
            open_batch[action.host] = [action]
            groups.append(open_batch[action.host])
    return groups


def prerequisites(batch: list[Action]) -> dict[str, tuple[str, ...]]:
    """Per service of *batch* (by name), the earlier services of the batch it must wait for.

    Only starts wait (a stop waits for nothing: ``down`` stops everything at once), and only
    for services started in the same batch before it; one named in ``after`` elsewhere (an
    earlier action, another host) is not waited for here, so no order can deadlock.
    """
    found: dict[str, tuple[str, ...]] = {}
    starting: list[str] = []
    for action in batch:
        resource = action.resource
        assert isinstance(resource, Service)
        name = resource.spec.name
        found[name] = tuple(dep for dep in resource.spec.after if dep in starting) if resource.running else ()
        if resource.running:
            starting.append(name)
    return found
