"""The node's identity and the one-process-per-data-folder lock."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from service.supervisor.node import DataDirInUseError, NodeLock, resolve_node_id


def test_generated_node_id_is_kept_across_restarts(tmp_path: Path) -> None:
    first = resolve_node_id(None, tmp_path)

    assert resolve_node_id(None, tmp_path) == first
    assert (tmp_path / "node-id").read_text(encoding="utf-8").strip() == first


def test_configured_node_id_wins_and_installations_differ(tmp_path: Path) -> None:
    assert resolve_node_id("node-a", tmp_path) == "node-a"
    assert resolve_node_id(None, tmp_path / "one") != resolve_node_id(None, tmp_path / "two")


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows; documented")
def test_a_second_process_on_the_same_data_folder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    first, second = NodeLock(tmp_path), NodeLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(DataDirInUseError, match="DATA_DIR"):
            second.acquire()
    finally:
        first.release()

    second.acquire()
    second.release()
