"""One role written both ways, run through both engines side by side on the lab.

    scripts/lab up && .venv/bin/python bench/engines_prepare.py [--repeat 3]

The role is ``roles/prepare`` (Ansible layout, run by ansible-runner) and its
twin below in toppipe's resources (run by pyinfra): the same checks (open-files
limit, Apptainer version, free space) and the same folder, subfolders and
README on the shared filesystem, on the same hosts (login, db, node1, node2),
over the same inventory. Each run starts with a fresh engine, so connecting
is part of it. A first run makes the folder (removed before it); a rerun
must change nothing. Both engines' times are printed, with their ratio.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jinja2 import Template  # noqa: E402

from deploy.engine import get_engine  # noqa: E402
from deploy.resources import Action, AnsibleTasks, Ensure, File  # noqa: E402

SUBFOLDERS = ("images", "project", "results", "slurm", "slurm/logs", "slurm/scripts")
OPEN_FILES, FREE_GIB = 8192, 2


def _fails(message: str) -> str:
    return f"echo {shlex.quote(message)} >&2; exit 1"


def pyinfra_twin(folder: str, site: str, apptainer: str, first: bool) -> list:
    """roles/prepare/tasks/main.yml in toppipe's resources (the unprivileged tasks, as the lab runs them)."""
    quoted = shlex.quote(folder)
    resources = [
        Ensure("open-files limit is high enough for dask",
               f'n=$(ulimit -Hn); [ "$n" = unlimited ] || [ "$n" -ge {OPEN_FILES} ]', _fails("open-files limit too low")),
        Ensure("Apptainer is the pinned version",
               f"apptainer --version | grep -q 'version {apptainer}'", _fails(f"Apptainer {apptainer} is not installed")),
    ]  # fmt: skip
    if first:  # the shared folder: once, from the first host (Ansible's run_once)
        readme = Template((REPO / "roles/prepare/templates/README.txt.j2").read_text()).render(toppipe_site=site)
        subfolders = " ".join(shlex.quote(f"{folder}/{s}") for s in SUBFOLDERS)
        resources += [
            Ensure("the site's folder on the shared filesystem",
                   f'[ -d {quoted} ] && [ "$(stat -c %a {quoted} | tail -c 4)" = "700" ]', f"mkdir -p {quoted} && chmod 700 {quoted}"),
            Ensure("its images, project, results and Slurm folders",
                   " && ".join(f"[ -d {shlex.quote(f'{folder}/{s}')} ]" for s in SUBFOLDERS), f"mkdir -p {subfolders}"),
            File(f"{folder}/README.txt", (readme + "\n").encode(), 0o600),
            Ensure("the shared filesystem has room for the site",
                   f"[ $(df -Pk {quoted} | awk 'NR==2 {{print $4}}') -ge {FREE_GIB * 1048576} ]", _fails("too little free space")),
        ]  # fmt: skip
    return resources


def timed(engine_name: str, site, actions: list[Action]) -> tuple[float, int]:
    """Seconds for one run with a fresh engine, and how many actions it changed."""
    started = time.perf_counter()
    with get_engine(engine_name) as engine:
        report = engine.apply(site, actions)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"{engine_name}: run failed: {[(r.action.describe(), r.message) for r in report.failed]}")
    return seconds, len(report.changed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ["TOPPIPE_STATE_DIR"] = tempfile.mkdtemp(prefix="toppipe-bench-")
    from deploy import artifacts
    from deploy.inventory import load_site
    from deploy.lifecycle import contexts
    from deploy.state import site_files
    from roles import AnsibleRole, site_roles

    site = load_site(REPO / "inventories" / "lab")
    prepare = next(r for r in site_roles(site) if isinstance(r, AnsibleRole) and r.name == "prepare")
    hosts = [h for h in site.hosts if prepare.applies_to(site, h)]
    folder = f"{site.settings.paths.shared}/bench-prepare"
    with get_engine("pyinfra") as engine:
        ctxs = contexts(engine, site, site_files(site))
    apptainer = artifacts.version("apptainer")
    plans = {
        "pyinfra": [Action(h.name, "prepare", r) for i, h in enumerate(hosts) for r in pyinfra_twin(folder, site.name, apptainer, i == 0)],
        "ansible": [
            Action(h.name, "prepare", AnsibleTasks("prepare", str(prepare.folder), "main",
                   tuple((k, folder if k == "toppipe_shared_site" else v) for k, v in prepare.variables(ctxs[h.name]))))
            for h in hosts
        ],
    }  # fmt: skip
    times: dict[str, dict[str, list[float]]] = {name: {"first": [], "rerun": []} for name in plans}
    try:
        for round_ in range(args.repeat):
            for name, actions in plans.items():
                shutil.rmtree(folder, ignore_errors=True)  # the lab's shared folder is this machine's
                first, changed = timed(name, site, actions)
                rerun, changed_again = timed(name, site, actions)
                if not changed or changed_again:
                    raise SystemExit(f"{name}: first run changed {changed}, rerun {changed_again}: not a fair comparison")
                times[name]["first"].append(first)
                times[name]["rerun"].append(rerun)
                print(f"round {round_ + 1}: {name:<8} first {first:6.2f} s  rerun {rerun:6.2f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(os.environ["TOPPIPE_STATE_DIR"], ignore_errors=True)
    print(f"role prepare on {', '.join(h.name for h in hosts)}; median of {args.repeat} rounds, fresh engine per run")
    print(f"{'run':<10}{'pyinfra s':>11}{'ansible s':>11}{'ansible/pyinfra':>17}")
    for run in ("first", "rerun"):
        py, ans = statistics.median(times["pyinfra"][run]), statistics.median(times["ansible"][run])
        print(f"{run:<10}{py:>11.2f}{ans:>11.2f}{ans / py:>17.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
