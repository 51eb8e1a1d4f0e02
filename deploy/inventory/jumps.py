"""The ssh config that lets every tool go through a site's jump hosts with the inventory's settings.

``ProxyJump`` makes ssh connect to the hop with its default configuration, so a
hop that is itself an inventory host (the login node) would be reached without
the inventory's user, key and known-hosts file. The file written here names, for
each such hop, those settings (and each jumped host's ``ProxyJump``); OpenSSH
(``-F``, passed on to the hop's own ssh) and pyinfra (``ssh_config_file``) read it
alike. Hops that are not inventory hosts keep the user's own ssh configuration
(it is included last).
"""

from __future__ import annotations

from pathlib import Path

from deploy.files import write_private
from deploy.inventory.model import Host, Site


def hop_host(site: Site, hop: str) -> Host | None:
    """The inventory's ssh host that a ``[user@]address[:port]`` hop names, if any."""
    rest = hop.rpartition("@")[2]
    address, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    for host in site.hosts:
        if not host.is_local and host.address == address.strip("[]") and (not port or int(port) == (host.port or 22)):
            return host
    return None


def ssh_config_text(site: Site) -> str:
    """``Host`` blocks: each jumped host's ProxyJump, each inventory hop's user, key and known hosts."""
    blocks, hops = [], {}
    for host in site.hosts:
        if not host.jump:
            continue
        blocks.append(f"Host {host.address}\n    ProxyJump {host.jump}\n")
        for hop in host.jump.split(","):
            found = hop_host(site, hop)
            if found is not None:
                hops[found.address] = found
    if site.agent_in_allocation:  # the tunnel jumps through the scheduler host to the agent's node
        hops.setdefault(site.scheduler_host.address, site.scheduler_host)
    for hop in hops.values():
        lines = [f"Host {hop.address}", "    StrictHostKeyChecking yes", "    BatchMode yes"]
        if hop.user:
            lines.append(f"    User {hop.user}")
        if hop.ssh_key:
            lines += [f"    IdentityFile {hop.ssh_key}", "    IdentitiesOnly yes"]
        if hop.known_hosts:
            lines.append(f"    UserKnownHostsFile {hop.known_hosts}")
        blocks.append("\n".join(lines) + "\n")
    user_config = Path("~/.ssh/config").expanduser()
    if user_config.is_file():
        blocks.append(f"Match all\n    Include {user_config}\n")
    return "".join(blocks)


def ssh_config(site: Site) -> Path:
    """Write the site's jump config (private, in its state folder) and return its path."""
    path = site.state_dir / "ssh_config"
    write_private(path, ssh_config_text(site))
    return path
