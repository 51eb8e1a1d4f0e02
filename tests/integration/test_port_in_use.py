"""A port taken by another program: one clear line, exit 2, nothing started."""

from __future__ import annotations

import shutil
import socket

import pytest
import yaml

from tests.conftest import REPO, marked_pids, run_deploy

pytestmark = pytest.mark.integration


@pytest.fixture
def inventory(tmp_path):
    folder = tmp_path / "inventories" / "porttest"
    shutil.copytree(REPO / "inventories" / "local", folder)
    settings_file = folder / "group_vars" / "all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    settings["toppipe"].update(site="porttest", ports={"scheduler": 28786, "dashboard": 28787, "jupyter": 28888})  # no lab site uses 28xxx
    settings_file.write_text(yaml.safe_dump(settings))
    return folder


def test_up_refuses_a_port_in_use_before_starting_anything(inventory, tmp_path):
    state = tmp_path / "state"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 28787))
        squatter.listen()
        result = run_deploy("up", str(inventory), state_dir=state)
    assert result.code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "group_vars/all.yml: toppipe.ports.dashboard: port 28787 on localhost is in use" in lines[0]
    assert "choose a free port" in lines[0]
    assert marked_pids("porttest") == []
    assert not (state / "porttest" / "connection.json").exists()
    assert not (state / "porttest" / "services").exists()
