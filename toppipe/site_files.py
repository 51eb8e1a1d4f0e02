"""The site's folder as an fsspec filesystem (``session.fs``), the same paths on every site:
``project/...`` (the synced project) and ``results/...`` (the result cache).

On a site with a shared folder it is ``<shared>/<site>`` on the scheduler host (the login
node), over SFTP with the inventory's user, key and known-hosts file: an unknown or
changed host key is refused (paramiko's RejectPolicy, as ssh's StrictHostKeyChecking),
and jump hosts are crossed by ``ssh -W`` with the site's ssh config, as the tunnel does.
On the local site (no shared folder) ``project`` is the project folder itself and
``results`` the site's result cache.
"""

from __future__ import annotations

import posixpath
import shlex

from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.sftp import SFTPFileSystem

from toppipe.errors import ToppipeError

CONNECT_TIMEOUT = 10


def ssh_uri(hop: str) -> str:
    """A ``[user@]host[:port]`` hop as a destination ssh takes (``ssh://`` when it names a port)."""
    rest = hop.rpartition("@")[2]
    has_port = "]:" in rest if rest.startswith("[") else rest.count(":") == 1
    return f"ssh://{hop}" if has_port else hop


def proxy_command(ssh: dict) -> list[str] | None:
    """``ssh -W`` through the login node's jump hosts (None without any), with the site's ssh config
    (the inventory's settings for hops that are inventory hosts) and strict host key checking."""
    if not ssh.get("jump"):
        return None
    hops = ssh["jump"].split(",")
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
    if ssh.get("ssh_config"):
        argv[1:1] = ["-F", ssh["ssh_config"]]
    if len(hops) > 1:
        argv += ["-J", ",".join(hops[:-1])]
    address = f"[{ssh['address']}]" if ":" in ssh["address"] else ssh["address"]
    return [*argv, "-W", f"{address}:{ssh.get('port') or 22}", ssh_uri(hops[-1])]


class SiteSFTPFileSystem(SFTPFileSystem):
    """fsspec's SFTP filesystem that only trusts known host keys and may go through jump hosts."""

    cachable = False

    def __init__(self, ssh: dict):
        self.site_ssh = ssh
        super().__init__(ssh["address"])

    def _connect(self):
        import paramiko

        ssh = self.site_ssh
        self.client = paramiko.SSHClient()
        if ssh.get("known_hosts"):
            self.client.load_host_keys(ssh["known_hosts"])
        else:
            self.client.load_system_host_keys()
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        command = proxy_command(ssh)
        sock = paramiko.ProxyCommand(shlex.join(command)) if command else None
        self.client.connect(
            ssh["address"], port=ssh.get("port") or 22, username=ssh.get("user"), key_filename=ssh.get("key"),
            sock=sock, timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT,
        )  # fmt: skip
        self.ftp = self.client.open_sftp()


class LocalSiteFileSystem(DirFileSystem):
    """The local site's counterpart of ``<shared>/<site>``: its top folders (``project``,
    ``results``) are wherever they are on this machine."""

    cachable = False

    def __init__(self, folders: dict[str, str]):
        super().__init__(path="/", fs=LocalFileSystem())
        self.folders = {name: folder.rstrip("/") for name, folder in folders.items() if folder}

    def _join(self, path):
        if not isinstance(path, str):
            return [self._join(p) for p in path]
        top, _, rest = self._strip_protocol(path).strip("/").partition("/")
        if top not in self.folders:
            raise FileNotFoundError(f"{path}: the local site's folder holds only {', '.join(sorted(self.folders))}")
        if ".." in rest.split("/"):
            raise ValueError(f"path {path!r} escapes the site's folder")
        return posixpath.join(self.folders[top], rest) if rest else self.folders[top]

    def _relpath(self, path):
        if not isinstance(path, str):
            return [self._relpath(p) for p in path]
        for top, folder in self.folders.items():
            if path == folder or path.startswith(folder + "/"):
                return top + path[len(folder):]
        return path

    def ls(self, path="", detail=True, **kwargs):
        if self._strip_protocol(path).strip("/"):
            return super().ls(path, detail=detail, **kwargs)
        present = [top for top in sorted(self.folders) if self.fs.isdir(self.folders[top])]  # results/ comes with the first run
        if not detail:
            return present
        return [{**self.fs.info(self.folders[top]), "name": top} for top in present]

    def info(self, path, **kwargs):
        if not self._strip_protocol(path).strip("/"):
            return {"name": "", "size": 0, "type": "directory"}
        return super().info(path, **kwargs)


def open_site_files(record: dict):
    """``session.fs`` of the site of connection *record*."""
    files = record.get("files")
    if not files:
        raise ToppipeError(f"the connection record of site {record['site']} predates session.fs: run python -m deploy up {record.get('inventory', 'INVENTORY')}")
    if "local" in files:
        return LocalSiteFileSystem(files["local"])
    ssh = files["ssh"]
    try:
        remote = SiteSFTPFileSystem(ssh)
    except Exception as exc:  # noqa: BLE001 - paramiko's and ssh's failures alike: one line naming the login node
        login = f"{ssh['user']}@{ssh['address']}" if ssh.get("user") else ssh["address"]
        raise ToppipeError(f"cannot open the shared folder of site {record['site']} over ssh to {login} ({type(exc).__name__}: {exc})") from None
    return DirFileSystem(path=files["root"], fs=remote)
