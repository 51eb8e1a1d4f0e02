"""deploy.artifacts.source_bundle: the code sent to the hosts, one tar per version of it.

Two deploys at once (two checkouts, or two versions) must not remove each other's bundle
while it is being sent: an older bundle goes only once it has been unused for a while.
"""

from __future__ import annotations

import os
import time

from deploy import artifacts


def test_a_new_bundle_removes_only_bundles_unused_for_a_while(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = artifacts.cache_dir()
    stale, in_use = cache / "source-0000000000000000.tar", cache / "source-1111111111111111.tar"
    for bundle in (stale, in_use):
        bundle.write_bytes(b"another version's code")
    hours_ago = time.time() - 2 * artifacts.SOURCE_BUNDLE_KEEP_SECONDS
    os.utime(stale, (hours_ago, hours_ago))

    made = artifacts.source_bundle()

    assert made.path.is_file() and made.path.name == f"source-{made.digest}.tar"
    assert not stale.exists()  # unused for two hours: gone
    assert in_use.exists()  # another deploy may be sending it now


def test_a_bundle_in_use_is_marked_used_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    made = artifacts.source_bundle()
    hours_ago = time.time() - 2 * artifacts.SOURCE_BUNDLE_KEEP_SECONDS
    os.utime(made.path, (hours_ago, hours_ago))

    again = artifacts.source_bundle()

    assert again.path == made.path
    assert time.time() - again.path.stat().st_mtime < artifacts.SOURCE_BUNDLE_KEEP_SECONDS  # safe from pruning
