"""The lab's servers controlled from a notebook executed by nbclient, as a user
would: ``toppipe.up`` shows its progress and finds the converged site unchanged,
``session.services()`` lists every service of every host with its health, and
restarting one host's workers from Python replaces them and is journaled like
the CLI's ``deploy`` commands."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, run_deploy

pytestmark = pytest.mark.lab

INVENTORY = "inventories/lab"


def _execute(cells: list[str], state_dir):
    """Run *cells* in a fresh kernel (cwd: the repository): the notebook, and each cell's printed text."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOPPIPE_STATE_DIR", str(state_dir))  # the kernel inherits it
        client.execute()
    return notebook, ["".join(o.get("text", "") for o in cell.outputs) for cell in notebook.cells]


def _journals(state_dir, command: str) -> list:
    folders = sorted((state_dir / "lab" / "deploys").iterdir())
    return [f for f in folders if json.loads((f / "inputs.json").read_text())["command"] == command]


def test_up_services_and_a_hosts_workers_restarted_from_a_notebook(site, state_dir):
    restarts_before = len(_journals(state_dir, "notebook-restart"))
    expected = sorted(line.split()[0] + "/" + line.split()[1] for line in _status_services(state_dir))
    notebook, printed = _execute(
        [
            f"import toppipe\nsession = toppipe.up({INVENTORY!r})",
            "services = session.services()\n"
            "print(sorted(s.target for s in services))\n"
            "print(sorted(s.target for s in services if s.health != 'answering'))",
            "before = {w.address for w in session.workers() if w.host == 'node1' and not w.slurm_job}\n"
            "print(session.services()['node1/workers'].restart())\n"
            "import time\n"
            "deadline = time.monotonic() + 120\n"
            "while True:\n"
            "    after = {w.address for w in session.workers() if w.host == 'node1' and not w.slurm_job}\n"
            "    if len(after) >= len(before) and not after & before or time.monotonic() > deadline:\n"
            "        break\n"
            "    time.sleep(0.5)\n"
            "print(len(before), len(after), len(after & before))",
            "session.close()",
        ],
        state_dir,
    )

    state = [m["state"] for m in notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()]
    (shown,) = [w["value"] for w in state if w.get("_model_name") == "HTMLModel"]
    assert f"up: site from {INVENTORY}: done, no changes" in shown, shown
    listed, unhealthy = printed[1].splitlines()
    assert eval(listed) == expected  # noqa: S307 (a list of strings the notebook printed)
    assert eval(unhealthy) == []  # noqa: S307
    restarted, counts = printed[2].splitlines()
    assert restarted == "workers on node1 restarted", printed[2]
    before, after, kept = map(int, counts.split())
    assert before > 0 and after >= before and kept == 0, counts  # each old worker replaced by a new one
    (journal,) = _journals(state_dir, "notebook-restart")[restarts_before:]
    assert json.loads((journal / "inputs.json").read_text())["options"] == {"host": "node1", "service": "workers"}
    assert json.loads((journal / "status.json").read_text())["exit_code"] == 0
    assert "last deploy: notebook-restart" in run_deploy("status", INVENTORY, state_dir=state_dir).stdout


def _status_services(state_dir) -> list[str]:
    """The service lines of ``deploy status`` (host, service, state...), what the CLI lists."""
    status = run_deploy("status", INVENTORY, state_dir=state_dir)
    assert status.code == 0, status.stdout + status.stderr
    return [line for line in status.stdout.splitlines() if line.startswith(("desktop ", "login ", "db ", "node1 ", "node2 "))]
