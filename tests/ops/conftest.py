"""Fixtures for ops tests that run the real daemons."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deploy import ALERTMANAGER
from tests.support.servers import Server, start_server, stop_server
from tests.support.tools import require_tool
from tests.support.worker import free_port


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Server]:
    """Alertmanager (Debian package) with deploy/alertmanager/alertmanager.yml, clustering off."""
    exe = require_tool("prometheus-alertmanager", "alertmanager")
    port = free_port()
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    server = start_server(
        [exe, f"--config.file={ALERTMANAGER}", f"--storage.path={workdir}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        f"http://127.0.0.1:{port}", workdir / "alertmanager.log",
    )
    yield server
    stop_server(server)
