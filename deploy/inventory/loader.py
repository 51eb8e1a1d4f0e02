"""Read an Ansible-style YAML inventory folder into a :class:`Site`.

Layout (the same files Ansible reads, so ansible-runner needs no conversion)::

    inventories/<site>/hosts.yml            all: {hosts, vars, children}
    inventories/<site>/group_vars/<g>.yml   variables of group g (all: site settings)
    inventories/<site>/host_vars/<h>.yml    variables of host h

Hosts are declared once under ``all.hosts``; groups list them by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml

from deploy.inventory import pools, schema, values
from deploy.inventory.errors import InventoryError
from deploy.inventory.model import KNOWN_GROUPS, REQUIRED_GROUPS, Host, HostVars, Settings, Site

GROUP_KEYS = ("hosts", "children", "vars")
_HOSTVAR_NAMES = set(typing.get_type_hints(HostVars))


def load_site(path: str | Path) -> Site:
    """Load and validate the inventory at *path* (a folder or its hosts.yml)."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    hosts_file = folder / "hosts.yml"
    if not folder.is_dir():
        raise InventoryError(folder, "", "no such inventory folder; pass a folder like inventories/local")
    if not hosts_file.is_file():
        raise InventoryError(folder, "", "no hosts.yml here; an inventory is a folder with hosts.yml (see inventories/example)")
    tree = _read_yaml(hosts_file)
    if not isinstance(tree, dict) or set(tree) != {"all"}:
        keys = ", ".join(map(str, tree)) if isinstance(tree, dict) else "nothing" if tree is None else type(tree).__name__
        raise InventoryError(hosts_file, "", f"the top level must be the single key 'all' (found: {keys})")
    group_vars = _read_vars_folder(folder / "group_vars")
    host_vars = _read_vars_folder(folder / "host_vars")
    declared, members, group_var_map = _walk_groups(hosts_file, tree["all"], group_vars)
    for group, (gfile, gvars, gpath) in group_var_map.items():
        if group != "all" and "toppipe" in gvars:
            raise InventoryError(gfile, _join(gpath, "toppipe"), "site settings belong in group_vars/all.yml; move them there")
    for name, (file, _) in host_vars.items():
        if name not in declared:
            raise _unknown_host(file, "", name, declared)
    settings = _settings(hosts_file, group_var_map.get("all", (hosts_file, {}, "all.vars")))
    _check_groups(hosts_file, members, declared)
    jumps: dict[str, tuple[Path, str]] = {}  # host -> where its ProxyJump was written
    hosts = tuple(
        _host(name, declared[name], members, group_var_map, host_vars.get(name), settings, hosts_file, jumps)
        for name in declared
    )
    site = Site(
        name=settings.site,
        inventory=hosts_file,
        settings=settings,
        hosts=hosts,
        groups=tuple((g, tuple(sorted(m))) for g, m in sorted(members.items())),
    )
    all_file, _, all_prefix = group_var_map.get("all", (hosts_file, {}, "all.vars"))
    site = dataclasses.replace(site, pools=pools.resolve(settings, hosts, dict(site.groups), all_file, _join(all_prefix, "toppipe.pools")))
    _check_client(site, hosts_file)
    _check_jumps(site, jumps)
    _check_project(site, group_var_map.get("all", (hosts_file, {}, "all.vars")))
    _check_roles(site, group_var_map.get("all", (hosts_file, {}, "all.vars")))
    _check_reach(site, group_var_map.get("all", (hosts_file, {}, "all.vars")))
    return site


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a list or mapping cannot be a key", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(file: Path) -> Any:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InventoryError(file, "", f"cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InventoryError(file, "", f"line {line}: not UTF-8 text; save the file as UTF-8") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark:
            line = f"line {mark.line + 1}: "
        elif isinstance(exc, yaml.reader.ReaderError):
            line = f"line {text.count(chr(10), 0, exc.position) + 1}: "
        else:
            line = ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InventoryError(file, "", f"{line}invalid YAML: {problem}; fix the syntax there") from None


def _read_vars_folder(folder: Path) -> dict[str, tuple[Path, dict]]:
    found: dict[str, tuple[Path, dict]] = {}
    if not folder.is_dir():
        return found
    for file in sorted(folder.iterdir()):
        if file.suffix not in (".yml", ".yaml"):
            continue
        data = _read_yaml(file)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InventoryError(file, "", "expected a mapping of variables at the top level")
        found[file.stem] = (file, data)
    return found


def _walk_groups(file: Path, root: Any, group_vars: dict) -> tuple[dict, dict, dict]:
    """Declared hosts, group -> member host names, group -> (file, vars, key path of the vars in file)."""
    if not isinstance(root, dict):
        raise InventoryError(file, "all", "expected a mapping with hosts, children and vars")
    declared: dict[str, dict] = {}
    root_hosts = root.get("hosts") or {}
    if not isinstance(root_hosts, dict):
        raise InventoryError(file, "all.hosts", "expected a mapping of host names; write each host as 'name:' on its own line")
    for name, hv in root_hosts.items():
        if hv is not None and not isinstance(hv, dict):
            raise InventoryError(file, f"all.hosts.{name}", "expected a mapping of host variables or nothing")
        declared[str(name)] = hv or {}
    members: dict[str, set[str]] = {}
    var_map: dict[str, tuple[Path, dict]] = {}

    def visit(group: str, body: Any, path: str) -> set[str]:
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise InventoryError(file, path, "expected a mapping with hosts, children or vars")
        for key in body:
            if key not in GROUP_KEYS:
                raise schema.unknown_key_error(file, path, str(key), GROUP_KEYS)
        if group != "all" and group not in KNOWN_GROUPS:
            guess = schema.nearest(group, KNOWN_GROUPS)
            if guess:
                raise InventoryError(file, path, f"unknown group; did you mean '{guess}'?")
        names: set[str] = set()
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise InventoryError(file, f"{path}.hosts", "expected a mapping of host names; write each host as 'name:' on its own line")
        for host, hv in hosts.items():
            host = str(host)
            if group != "all":
                if host not in declared:
                    raise _unknown_host(file, f"{path}.hosts.{host}", host, declared)
                if hv:
                    raise InventoryError(
                        file, f"{path}.hosts.{host}", "host variables belong under all.hosts or in host_vars/; list the host here without them"
                    )
            names.add(host)
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise InventoryError(file, f"{path}.children", "expected a mapping of groups")
        for child, child_body in children.items():
            child = str(child)
            if child in members:
                raise InventoryError(file, f"{path}.children.{child}", "group defined twice; define each group once")
            names |= visit(child, child_body, f"{path}.children.{child}")
        inline_vars = body.get("vars") or {}
        if not isinstance(inline_vars, dict):
            raise InventoryError(file, f"{path}.vars", "expected a mapping of variables")
        vars_file, file_vars = group_vars.get(group, (file, {}))
        if inline_vars and file_vars:
            raise InventoryError(vars_file, "", f"group '{group}' also has vars in hosts.yml; keep them in one place")
        var_map[group] = (vars_file, file_vars, "") if file_vars else (file, inline_vars, f"{path}.vars")
        members[group] = names
        return names

    visit("all", root, "all")
    for group, (gfile, _) in group_vars.items():
        if group not in members:
            raise InventoryError(gfile, "", f"no group '{group}' in hosts.yml; rename the file or add the group")
    return declared, members, var_map


def _unknown_host(file: Path, key: str, host: str, declared: dict) -> InventoryError:
    guess = schema.nearest(host, declared)
    fix = f"did you mean '{guess}'?" if guess else "declare it under all.hosts first"
    return InventoryError(file, key or host, f"unknown host '{host}'; {fix}")


def _settings(default_file: Path, all_vars: tuple[Path, dict, str]) -> Settings:
    file, variables, prefix = all_vars
    raw = variables.get("toppipe")
    if raw is None:
        where = " in group_vars/all.yml" if file == default_file else ""
        raise InventoryError(
            file, "toppipe", f"site settings are missing; add a 'toppipe:' mapping with at least 'site: NAME'{where}"
        )
    root = _join(prefix, "toppipe")
    if isinstance(raw, dict) and isinstance(raw.get("roles"), list):
        raw = {**raw, "roles": [_role_entry(entry) for entry in raw["roles"]]}
    written = pools.written_pools(raw.get("pools"), file, _join(root, "pools")) if isinstance(raw, dict) else ()
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k != "pools"}
    settings = dataclasses.replace(schema.build(Settings, raw, file, root), pools=written)
    _check_ports(settings, file, root, set((raw or {}).get("ports") or ()))
    return settings


def _check_ports(settings: Settings, file: Path, root: str, written: set[str]) -> None:
    """Every service its own port, the defaults included (a clash names a key the user wrote)."""
    taken: dict[int, str] = {}
    names = [f.name for f in dataclasses.fields(settings.ports)]
    for name in sorted(names, key=lambda n: n in written):  # defaults first, so the key reported was written
        port = getattr(settings.ports, name)
        if port in taken:
            raise InventoryError(
                file, f"{root}.ports.{name}", f"port {port} is also {root}.ports.{taken[port]}; give each service its own port"
            )
        taken[port] = name


def _role_entry(entry: Any) -> Any:
    """``- name`` means ``- {role: name}``; ``hosts: group`` means ``hosts: [group]``."""
    if isinstance(entry, str):
        return {"role": entry}
    if isinstance(entry, dict) and isinstance(entry.get("hosts"), str):
        return {**entry, "hosts": [entry["hosts"]]}
    return entry


def _check_roles(site: Site, all_vars: tuple[Path, dict, str]) -> None:
    """Every role of ``toppipe.roles`` exists, toppipe's own are all there in order, hosts exist."""
    if not site.settings.roles:
        return
    from roles import role_list_problems  # roles import this package: only once it is loaded

    file, _, prefix = all_vars
    targets = {h.name for h in site.hosts} | {g for g, _ in site.groups}
    problems = role_list_problems(site.settings.roles, site.inventory.parent, targets)
    if problems:
        index, problem = problems[0]
        key = _join(prefix, "toppipe.roles") + (f"[{index}]" if index < len(site.settings.roles) else "")
        raise InventoryError(file, key, problem)


#: The site's ports a tunnel forwards to the client's loopback (at port + ``toppipe.tunnel.offset``).
TUNNELLED_PORTS = ("scheduler", "dashboard", "postgres", "redis")


def _check_reach(site: Site, all_vars: tuple[Path, dict, str]) -> None:
    """A tunnel needs a scheduler on another host; its local ends are ports clear of the client's own."""
    file, _, prefix = all_vars
    root = _join(prefix, "toppipe")
    if site.settings.reach == "tunnel" and site.scheduler_host.is_local:
        raise InventoryError(file, f"{root}.reach", "the scheduler is on this machine, so there is nothing to tunnel; write direct or leave reach out")
    if site.agent_in_allocation:
        _check_allocation(site, file, root)
    if not site.tunnelled:
        return
    ports, offset = site.settings.ports, site.settings.tunnel.offset
    client = {ports.jupyter: "jupyter", ports.app: "app"}
    for name in TUNNELLED_PORTS:
        end = getattr(ports, name) + offset
        if end > 65535:
            raise InventoryError(file, f"{root}.tunnel.offset", f"{name}'s local end {end} is not a TCP port; choose an offset of at most {65535 - getattr(ports, name)}")
        if end in client:
            raise InventoryError(
                file, f"{root}.tunnel.offset", f"{name}'s local end {end} is also {root}.ports.{client[end]} on this machine; choose another offset"
            )


def _check_allocation(site: Site, file: Path, root: str) -> None:
    """An agent inside an allocation is submitted from the scheduler host, found again through
    the shared filesystem, and reached through the tunnel."""
    key = f"{root}.agent.placement"
    if "slurm" not in site.scheduler_host.groups:
        raise InventoryError(file, key, f"allocation needs Slurm on the scheduler host {site.scheduler_host.name}; add it to the slurm group, or write host")
    if not site.settings.paths.shared:
        raise InventoryError(file, key, f"allocation needs a shared filesystem to publish the agent's address; set {root}.paths.shared, or write host")
    if not site.tunnelled:
        raise InventoryError(file, key, f"allocation is reached through the site's tunnel; leave {root}.reach out or write tunnel")


def _check_groups(file: Path, members: dict[str, set[str]], declared: dict) -> None:
    if not declared:
        raise InventoryError(file, "all.hosts", "no hosts declared; declare at least one host")
    for group, count in REQUIRED_GROUPS.items():
        if group not in members:
            raise InventoryError(file, f"all.children.{group}", f"required group '{group}' is missing; add it with its hosts")
        if not members[group]:
            raise InventoryError(file, f"all.children.{group}", "group has no hosts; list at least one")
        if count is not None and len(members[group]) != count:
            raise InventoryError(
                file, f"all.children.{group}", f"needs exactly {count} host, has {len(members[group])}; keep one"
            )


def _host(name, inline, members, group_var_map, own, settings, hosts_file, jumps) -> Host:
    groups = tuple(sorted(g for g, m in members.items() if name in m and g != "all"))
    merged: dict[str, Any] = {}
    sources: dict[str, Path] = {}
    paths: dict[str, str] = {}  # key path of the mapping each value was read from, "" for a whole file
    for group in ["all", *groups]:
        gfile, gvars, gpath = group_var_map.get(group, (hosts_file, {}, ""))
        for key, value in gvars.items():
            if key == "toppipe":
                if group != "all":
                    raise InventoryError(gfile, _join(gpath, "toppipe"), "site settings belong in group_vars/all.yml; move them there")
                continue
            key = str(key)
            merged[key], sources[key], paths[key] = value, gfile, gpath
    for key, value in inline.items():
        key = str(key)
        merged[key], sources[key], paths[key] = value, hosts_file, f"all.hosts.{name}"
    if own:
        ofile, ovars = own
        if inline:
            raise InventoryError(ofile, "", f"host '{name}' also has variables in hosts.yml; keep them in one place")
        for key, value in ovars.items():
            key = str(key)
            merged[key], sources[key], paths[key] = value, ofile, ""
    known: dict[str, Any] = {}
    extra: list[tuple[str, object]] = []
    for key, value in merged.items():
        if key in _HOSTVAR_NAMES:
            known[key] = schema.field_value(HostVars, key, value, sources[key], _join(paths[key], key))
            continue
        if key == "toppipe":
            raise InventoryError(sources[key], _join(paths[key], key), "site settings belong in group_vars/all.yml; move them there")
        guess = schema.nearest(key, _HOSTVAR_NAMES)
        if key.startswith("toppipe") or (guess and _close(key, guess)):
            raise schema.unknown_key_error(sources[key], paths[key], key, _HOSTVAR_NAMES)
        extra.append((key, value))
    hv = HostVars(**known)
    key = "ansible_ssh_common_args"
    known_hosts, jump = _ssh_options(hv.ansible_ssh_common_args, sources.get(key), _join(paths.get(key, ""), key))
    if jump:
        jumps[name] = (sources[key], _join(paths[key], key))
    local = hv.ansible_connection == "local"
    if "client" in groups and not local:
        key = "ansible_connection"
        if key in sources:
            file, where = sources[key], _join(paths[key], key)
        else:
            file, where = (own[0], key) if own else (hosts_file, f"all.hosts.{name}.{key}")
        raise InventoryError(file, where, "the client host is this machine; set ansible_connection: local")
    return Host(
        name=name,
        address=hv.ansible_host or (settings.bind if local else name),
        connection=hv.ansible_connection,
        user=hv.ansible_user,
        port=hv.ansible_port,
        ssh_key=hv.ansible_ssh_private_key_file,
        known_hosts=known_hosts,
        jump=jump,
        groups=groups,
        runtime=hv.toppipe_runtime or settings.runtime,
        workers=(hv.toppipe_workers if hv.toppipe_workers is not None else settings.workers.per_host)
        if "workers" in groups
        else 0,
        python=hv.toppipe_python or _interpreter(hv.ansible_python_interpreter, sources, paths),
        extra_vars=tuple(extra),
    )


SSH_OPTIONS = ("UserKnownHostsFile", "StrictHostKeyChecking", "ProxyJump")


def _ssh_options(args: str | None, file: Path | None, key: str) -> tuple[str | None, str | None]:
    """The known-hosts file (checked, ``~`` expanded) and jump host from ``-o Key=Value`` ssh arguments.

    Only options both engines honour alike are accepted; host keys are always
    checked strictly.
    """
    if not args:
        return None, None
    options: dict[str, str] = {}
    words = args.split()
    while words:
        word = words.pop(0)
        if word != "-o" or not words or "=" not in words[0]:
            raise InventoryError(file, key, f"cannot use '{word}'; write options as -o Key=Value ({', '.join(SSH_OPTIONS)})")
        option, value = words.pop(0).split("=", 1)
        if option not in SSH_OPTIONS:
            raise InventoryError(file, key, f"ssh option {option} is not supported; toppipe understands {', '.join(SSH_OPTIONS)}")
        options[option] = value
    if options.get("StrictHostKeyChecking", "yes") != "yes":
        raise InventoryError(file, key, "StrictHostKeyChecking must stay yes; add the host's key to the known-hosts file instead")
    known_hosts = options.get("UserKnownHostsFile")
    try:
        if known_hosts is not None:
            known_hosts = values.known_hosts_file(known_hosts)
        jump = options.get("ProxyJump")
        if jump is not None:
            jump = ",".join(values.jump_hop(hop) for hop in jump.split(","))
    except ValueError as exc:
        raise InventoryError(file, key, str(exc)) from None
    return known_hosts, jump


def _interpreter(value: str | None, sources: dict[str, Path], paths: dict[str, str]) -> str | None:
    """The Python of ``ansible_python_interpreter``; None for Ansible's ``auto`` modes."""
    if value is None or value.startswith("auto"):
        return None
    key = "ansible_python_interpreter"
    try:
        return values.remote_command(value)
    except ValueError as exc:
        raise InventoryError(sources[key], _join(paths[key], key), str(exc)) from None


def _close(key: str, guess: str) -> bool:
    return difflib.SequenceMatcher(None, key, guess).ratio() >= 0.85


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_client(site: Site, file: Path) -> None:
    client = site.client_host
    if not client.is_local:
        raise InventoryError(
            file, f"all.hosts.{client.name}.ansible_connection", "the client host is this machine; set ansible_connection: local"
        )
    for host in site.hosts:
        if not host.is_local and not host.address:
            raise InventoryError(file, f"all.hosts.{host.name}.ansible_host", "needs an address; set ansible_host")


def _check_jumps(site: Site, where: dict[str, tuple[Path, str]]) -> None:
    """A ProxyJump hop is an address ssh can reach: not the host itself, not an inventory name."""
    for host in site.hosts:
        if not host.jump:
            continue
        file, key = where[host.name]
        for hop in host.jump.split(","):
            target = hop.rpartition("@")[2].rpartition(":")[0] or hop.rpartition("@")[2]
            if target in (host.name, host.address):
                raise InventoryError(file, key, f"ProxyJump={hop} is {host.name} itself; jump through another host or leave ProxyJump out")
            named = next((h for h in site.hosts if h.name == target and h.address != target), None)
            if named is not None:
                raise InventoryError(
                    file, key, f"ProxyJump={hop} is an inventory name, which ssh does not know; write its address {named.address}"
                )


def _check_project(site: Site, all_vars: tuple[Path, dict, str]) -> None:
    """The project folder (``paths.project``) exists on this machine."""
    file, _, prefix = all_vars
    project = site.project_dir
    if not project.is_dir():
        problem = "is not a folder" if project.exists() else "does not exist"
        raise InventoryError(
            file, _join(prefix, "toppipe.paths.project"),
            f"the project folder {problem} ({project}); name your project folder, absolute or relative to the inventory folder",
        )  # fmt: skip
