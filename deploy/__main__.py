"""``python -m deploy {up,down,status,plan,check,build,logs,notebook} INVENTORY``.

Exit codes:
  0  done (``status``: every service running and answering; ``check``: every check passed)
  1  the deploy failed on some host (the summary names host, role and why), or
     a health check failed (``check``, and ``up`` after a successful deploy), or
     an image build failed (``build``: the error ends with the build log's last lines), or
     a host could not be reached (``plan`` is then incomplete), or
     a task fails already in check mode (``plan``), or
     a log could not be read (``logs``: its host is unreachable or it has none yet)
  2  bad input: inventory, arguments, a port in use; nothing was changed
  3  ``status`` only: the site is not (fully) running; ``notebook``: JupyterLab does not answer
  130 interrupted
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import time
from pathlib import Path

# A deploy started from inside a site's service (a Jupyter terminal) must not
# carry that service's marker, or stopping the service would stop the deploy.
if "TOPPIPE_SERVICE" in os.environ:
    env = {k: v for k, v in os.environ.items() if k != "TOPPIPE_SERVICE"}
    os.execve(sys.executable, [sys.executable, "-m", "deploy", *sys.argv[1:]], env)

# pyinfra runs each host in a gevent greenlet; only with the standard library
# made cooperative (what pyinfra's own CLI does first) do the hosts' ssh
# round trips overlap instead of queueing. Done only when this file is the
# program (python -m deploy), never on import: the client library and the
# tests call the same code without it (hosts then take turns). ``logs`` reads one host
# and may ask the scheduler for its workers with a dask client, which needs the standard library.
if __name__ == "__main__" and sys.argv[1:2] != ["logs"]:
    from importlib import metadata

    from gevent import monkey

    # patch_all looks for plugins of each of its ~20 events with a scan of every installed
    # distribution (metadata.entry_points): 0.2 s of each command. One scan serves them all.
    _installed = metadata.entry_points()
    _scan, metadata.entry_points = metadata.entry_points, lambda **group: _installed.select(**group)
    try:
        # os and signal stay as they are: pexpect (under ansible-runner) forks and reaps its own children
        monkey.patch_all(os=False, signal=False)
    finally:
        metadata.entry_points = _scan

from deploy import DeployError, UserError, display  # noqa: E402
from deploy.inventory import Site, load_site  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every user error
        raise UserError(f"{message} (see python -m deploy --help)")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m deploy", description="Provision a toppipe site from its inventory.", epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in [
        ("up", "bring the site to the state its inventory describes"),
        ("plan", "show what up would change, change nothing"),
        ("down", "stop everything the site started (keeps data unless --purge)"),
        ("status", "what runs where, read from the hosts"),
        ("check", "health checks per host and role: services, TLS, versions, disk, shared folder, Slurm"),
        ("build", "build the site's Apptainer images (cached by the hash of their inputs)"),
        ("logs", "a service's or worker's log, read on its host (no TARGET: list the targets)"),
        ("notebook", "the site's JupyterLab: its address, opened in a browser where this desktop has one"),
    ]:
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("inventory", help="inventory folder, e.g. inventories/local")
        if name == "up":
            cmd.add_argument("-v", "--verbose", action="store_true", help="also list actions that changed nothing")
            cmd.add_argument("--no-check", action="store_true", help="skip the health checks after a successful deploy")
        if name in ("up", "plan"):
            cmd.add_argument("--full", action="store_true", help="check every action and run every Ansible role on every host, even on hosts found converged in one round trip")
        if name == "logs":
            cmd.add_argument("target", nargs="?", help="scheduler, HOST/SERVICE (node1/workers), a worker's name or address, or a Slurm job id")
            cmd.add_argument("-n", "--lines", type=int, default=20, help="how many of the last lines (default 20)")
            cmd.add_argument("-f", "--follow", action="store_true", help="then print lines as they are written, until interrupted")
        if name == "down":
            cmd.add_argument("--purge", action="store_true", help="also delete the site's data, secrets and state")
    return top


@functools.cache
def _engine():
    """One engine per command, so each host is connected to once (closed by :func:`main`)."""
    from deploy.engine import get_engine

    return get_engine()


def cmd_up(site: Site, args) -> int:
    from deploy import lifecycle
    from deploy.journal import Journal

    started = time.monotonic()
    display.out(f"up: site {site.name} from {site.inventory.parent}")
    journal = Journal.start(site, "up", {})
    printer = display.ProgressPrinter(verbose=args.verbose)

    def progress(result):
        journal.event(result)
        printer(result)

    try:
        result = lifecycle.up(_engine(), site, progress, note=lambda text: display.out(f"  {text}"), full=args.full)
    except DeployError as exc:
        journal.finish(exc.exit_code, None, str(exc))
        raise
    report = result.report
    display.summary(report, time.monotonic() - started)
    code, error = (EXIT_OK if report.ok else EXIT_FAILED), ""
    if report.ok and not args.no_check:
        checked = _run_checks(site, failures_only=True)
        if not checked.ok:
            code, error = EXIT_FAILED, f"health checks: {checked.summary()}"
    if not report.ok:
        error = f"site {site.name} did not converge; the summary above says where and why, and the next up retries"
    if report.refused:
        kept = ", ".join(f"{r.action.host} {r.action.resource.spec.name}" for r in report.refused)
        refused = f"the new definition of {kept} was refused and the previous one still runs; fix the change the summary names, then run up again"
        error = f"site {site.name}: {refused}" if not (report.failed or report.unreachable) else f"{error}; {refused}"
    journal.finish(code, report, error)
    if report.ok:
        _how_to_connect(site, result.connection)
    elif error:
        display.error(error)
    return code


def _run_checks(site: Site, failures_only: bool):
    """Run the site's health checks and print their table (or only the failed rows) and a summary line."""
    from deploy import checks

    report = checks.run_checks(site)
    shown = report.failed if failures_only else report.results
    display.out()
    if shown:
        for line in checks.table(shown):
            display.out(line)
    display.out(report.summary())
    return report


def _how_to_connect(site: Site, record: dict) -> None:
    display.out()
    display.out(f"scheduler  {record['scheduler']} (TLS, site certificates only)")
    display.out(f"dashboard  {record['dashboard']}")
    display.out(f"jupyter    {record['jupyter']}  (token in {record['jupyter_token_file']})")
    if record.get("app"):
        display.out(f"site       {record['app']}  (open it with ?token=<the token in {record['app_token_file']}>)")
    display.out("from a notebook:")
    display.out("    import toppipe")
    display.out(f'    session = toppipe.connect("{site.name}")')
    display.out("    session.client.submit(sum, [1, 2]).result()")


def cmd_plan(site: Site, args) -> int:
    from deploy import lifecycle

    display.out(f"plan: site {site.name} from {site.inventory.parent}")
    report = lifecycle.plan(_engine(), site, full=args.full, note=lambda text: display.out(f"  {text}"))
    display.plan_table(report)
    return EXIT_FAILED if report.unreachable or report.failed else EXIT_OK


def cmd_down(site: Site, args) -> int:
    from deploy import lifecycle
    from deploy.journal import Journal

    started = time.monotonic()
    display.out(f"down: site {site.name}" + (" (purge: data and secrets too)" if args.purge else ""))
    journal = Journal.start(site, "down", {"purge": args.purge})
    printer = display.ProgressPrinter()

    def progress(result):
        journal.event(result)
        printer(result)

    report = lifecycle.down(_engine(), site, args.purge, progress)
    display.summary(report, time.monotonic() - started)
    code = EXIT_OK if report.ok else EXIT_FAILED
    journal.finish(code, report)
    return code


def cmd_status(site: Site, args) -> int:
    from deploy import lifecycle
    from deploy.journal import latest

    states, unreachable = lifecycle.status(_engine(), site)
    display.status_table(states, unreachable)
    last = latest(site)
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["ended"]))
        display.out(f"last deploy: {last['command']} at {when}, exit {last['exit_code']}" + (f": {last['error']}" if last.get("error") else ""))
    running = states and not unreachable and all(s.answering for s in states.values())
    return EXIT_OK if running else EXIT_NOT_RUNNING


def cmd_check(site: Site, args) -> int:
    display.out(f"check: site {site.name}")
    return EXIT_OK if _run_checks(site, failures_only=False).ok else EXIT_FAILED


def cmd_build(site: Site, args) -> int:
    """Every image in IMAGES, bases first (explicit ``build`` validates them all): name, digest, path, built in N s or cached."""
    from deploy import images

    display.out(f"build: images of site {site.name}")
    for name in images.IMAGES:
        planned = images.planned(name)
        cached, started = planned.path.is_file(), time.monotonic()
        artifact = images.build(name, note=lambda text: display.out(f"  {text}"))
        how = "cached" if cached else f"built in {time.monotonic() - started:.0f} s"
        display.out(f"{name}  {artifact.digest}  {artifact.path}  {how}")
    return EXIT_OK


def cmd_logs(site: Site, args) -> int:
    from deploy import logs

    if args.target is None:
        services, slurm_log = logs.site_services(_engine(), site)
        for target in logs.targets(services):
            display.out(target)
        return EXIT_OK
    target = _log_target(site, args.target)
    if args.follow:  # until interrupted or terminated, which both end the follower on the host too
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(EXIT_OK))
        try:
            for line in logs.follow(site, target, args.lines):
                display.out(line)
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    text = logs.read(site, target, args.lines)
    if text:
        display.out(text)
    return EXIT_OK


def cmd_notebook(site: Site, args) -> int:
    """The address of the site's JupyterLab, once it answers; opened in the desktop's browser
    (with its token) where there is one, else printed with where the token is."""
    import socket
    import urllib.parse
    import webbrowser

    from deploy.state import read_connection

    record = read_connection(site.state_dir)
    if not record:
        raise UserError(f"site {site.name} has no connection record in {site.state_dir}; bring it up first: python -m deploy up {site.inventory.parent}")
    url = urllib.parse.urlsplit(record["jupyter"])
    try:
        socket.create_connection((url.hostname, url.port), timeout=5).close()
    except OSError as exc:
        display.error(f"JupyterLab of site {site.name} does not answer at {record['jupyter']} ({exc.strerror or exc}); see python -m deploy status {site.inventory.parent}")
        return EXIT_NOT_RUNNING
    display.out(f"jupyter    {record['jupyter']}  (token in {record['jupyter_token_file']})")
    # only a graphical session's browser: without one, webbrowser would start a text browser in this terminal
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        token = Path(record["jupyter_token_file"]).read_text().strip()
        if webbrowser.open(f"{record['jupyter']}?token={urllib.parse.quote(token)}"):
            display.out("           opened in your browser")
    return EXIT_OK


def _log_target(site: Site, name: str):
    """The log *name* names; a worker's name or address is asked of the scheduler only when nothing else matches."""
    from deploy import logs

    try:
        return logs.locate(_engine(), site, name)
    except UserError:
        workers = _site_workers(site)
        if not workers:
            raise
        return logs.locate(_engine(), site, name, workers)


def _site_workers(site: Site) -> list:
    """The site's dask workers as its scheduler lists them, or none when it cannot be asked."""
    from deploy.logs import Worker

    if not (site.state_dir / "connection.json").is_file():
        return []
    import toppipe
    from toppipe.errors import ToppipeError

    try:
        with toppipe.connect(str(site.inventory.parent), timeout=10) as session:
            return [Worker(w.name, w.address, w.host, w.slurm_job) for w in session.workers()]
    except (OSError, ToppipeError):
        return []


COMMANDS = {"up": cmd_up, "plan": cmd_plan, "down": cmd_down, "status": cmd_status, "check": cmd_check, "build": cmd_build, "logs": cmd_logs, "notebook": cmd_notebook}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        site = load_site(args.inventory)
        return COMMANDS[args.command](site, args)
    except DeployError as exc:
        display.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        display.error("interrupted; run the same command again to converge")
        return EXIT_INTERRUPTED
    finally:
        if _engine.cache_info().currsize:
            _engine().close()
        _engine.cache_clear()


if __name__ == "__main__":
    from toppipe.quick_exit import run

    run(main)  # the heap pyinfra and gevent leave is not torn down object by object
