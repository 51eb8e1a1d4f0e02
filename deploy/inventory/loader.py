"""Read an Ansible-style YAML inventory folder into a :class:`Site`.

Layout (the same files Ansible reads, so ansible-runner needs no conversion)::

    inventories/<site>/hosts.yml            all: {hosts, vars, children}
    inventories/<site>/group_vars/<g>.yml   variables of group g (all: site settings)
    inventories/<site>/host_vars/<h>.yml    variables of host h

Hosts are declared once under ``all.hosts``; groups list them by name.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from deploy.inventory import schema
from deploy.inventory.errors import InventoryError
from deploy.inventory.model import KNOWN_GROUPS, REQUIRED_GROUPS, Host, HostVars, Settings, Site

GROUP_KEYS = ("hosts", "children", "vars")
SITE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_HOSTVAR_TYPES = typing.get_type_hints(HostVars)
_HOSTVAR_NAMES = set(_HOSTVAR_TYPES)


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
    hosts = tuple(
        _host(name, declared[name], members, group_var_map, host_vars.get(name), settings, hosts_file)
        for name in declared
    )
    site = Site(
        name=settings.site,
        inventory=hosts_file,
        settings=settings,
        hosts=hosts,
        groups=tuple((g, tuple(sorted(m))) for g, m in sorted(members.items())),
    )
    _check_client(site, hosts_file)
    _check_roles(site, group_var_map.get("all", (hosts_file, {}, "all.vars")))
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
    settings = schema.build(Settings, raw, file, root)
    if not SITE_NAME.match(settings.site):
        raise InventoryError(file, f"{root}.site", f"'{settings.site}' is not a site name; use lowercase letters, digits and '-'")
    ports: dict[int, str] = {}
    for name in ("scheduler", "dashboard", "jupyter"):
        port = getattr(settings.ports, name)
        if not 1 <= port <= 65535:
            raise InventoryError(file, f"{root}.ports.{name}", f"{port} is not a TCP port; use 1-65535")
        if port in ports:
            raise InventoryError(
                file, f"{root}.ports.{name}", f"port {port} is also {root}.ports.{ports[port]}; give each service its own port"
            )
        ports[port] = name
    workers = settings.workers
    if workers.per_host < 0:
        raise InventoryError(file, f"{root}.workers.per_host", f"{workers.per_host} is negative; use 0 or more")
    if workers.threads < 1:
        raise InventoryError(file, f"{root}.workers.threads", f"{workers.threads} threads cannot run a worker; use 1 or more")
    if not re.fullmatch(r"\d+(\.\d+)?\s*(B|[KMGT]i?B)", workers.memory):
        raise InventoryError(file, f"{root}.workers.memory", f"'{workers.memory}' is not a size; write it like 2GiB or 512MiB")
    return settings


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


def _host(name, inline, members, group_var_map, own, settings, hosts_file) -> Host:
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
            known[key] = schema.convert(_HOSTVAR_TYPES[key], value, sources[key], _join(paths[key], key))
            continue
        if key == "toppipe":
            raise InventoryError(sources[key], _join(paths[key], key), "site settings belong in group_vars/all.yml; move them there")
        guess = schema.nearest(key, _HOSTVAR_NAMES)
        if key.startswith("toppipe") or (guess and _close(key, guess)):
            raise schema.unknown_key_error(sources[key], paths[key], key, _HOSTVAR_NAMES)
        extra.append((key, value))
    hv = HostVars(**known)
    if hv.toppipe_workers is not None and hv.toppipe_workers < 0:
        key = "toppipe_workers"
        raise InventoryError(sources[key], _join(paths[key], key), f"{hv.toppipe_workers} is negative; use 0 or more")
    if hv.ansible_port is not None and not 1 <= hv.ansible_port <= 65535:
        key = "ansible_port"
        raise InventoryError(sources[key], _join(paths[key], key), f"{hv.ansible_port} is not a TCP port; use 1-65535")
    known_hosts, jump = _ssh_options(hv.ansible_ssh_common_args, sources.get("ansible_ssh_common_args"))
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
        ssh_key=_expand(hv.ansible_ssh_private_key_file),
        known_hosts=_expand(known_hosts),
        jump=jump,
        groups=groups,
        runtime=hv.toppipe_runtime or settings.runtime,
        workers=(hv.toppipe_workers if hv.toppipe_workers is not None else settings.workers.per_host)
        if "workers" in groups
        else 0,
        python=hv.toppipe_python or hv.ansible_python_interpreter,
        extra_vars=tuple(extra),
    )


SSH_OPTIONS = ("UserKnownHostsFile", "StrictHostKeyChecking", "ProxyJump")


def _ssh_options(args: str | None, file: Path | None) -> tuple[str | None, str | None]:
    """The known-hosts file and jump host from ``-o Key=Value`` ssh arguments.

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
            raise InventoryError(file, "ansible_ssh_common_args", f"cannot use '{word}'; write options as -o Key=Value ({', '.join(SSH_OPTIONS)})")
        key, value = words.pop(0).split("=", 1)
        if key not in SSH_OPTIONS:
            raise InventoryError(file, "ansible_ssh_common_args", f"ssh option {key} is not supported; toppipe understands {', '.join(SSH_OPTIONS)}")
        options[key] = value
    if options.get("StrictHostKeyChecking", "yes") != "yes":
        raise InventoryError(file, "ansible_ssh_common_args", "StrictHostKeyChecking must stay yes; add the host's key to the known-hosts file instead")
    return options.get("UserKnownHostsFile"), options.get("ProxyJump")


def _expand(path: str | None) -> str | None:
    """``~`` in a client-side path means the user's home, as in ssh."""
    return os.path.expanduser(path) if path else None


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
