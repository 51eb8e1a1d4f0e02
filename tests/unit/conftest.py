"""Fixtures of the unit tier."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inventory_copies import copy_lab_with_stand_in_keys


@pytest.fixture(scope="session")
def lab_inventory(tmp_path_factory) -> Path:
    """The lab's inventory with stand-in ssh key files (the real ones exist only while the lab is up); tests
    must not change it (copy_lab_with_stand_in_keys makes a copy to change)."""
    return copy_lab_with_stand_in_keys(tmp_path_factory.mktemp("inventories") / "lab")
