"""pytest plugin (entry point ``lmstudio_async``): stand-in LM Studio server fixtures.

* ``lmstudio_server``: a fresh :class:`ThreadedStandInServer` per test (works in sync and
  async tests); per-test options via ``@pytest.mark.lmstudio_server(load_seconds=..., ...)``.
* ``lmstudio_host``: just its ``"127.0.0.1:PORT"`` string.

Fixture defaults differ from the server's: ``load_seconds=0.05`` to keep tests fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ._server import ThreadedStandInServer

FIXTURE_DEFAULTS: dict[str, Any] = {"port": 0, "load_seconds": 0.05}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lmstudio_server(**options): options for the lmstudio_server fixture "
        "(any ThreadedStandInServer keyword: load_seconds, memory_gb, jit_evict, api_token, "
        "catalog, ...)",
    )


@pytest.fixture
def lmstudio_server(request: pytest.FixtureRequest) -> Iterator[ThreadedStandInServer]:
    """A fresh stand-in LM Studio server in a background thread, stopped after the test."""
    options = dict(FIXTURE_DEFAULTS)
    for marker in reversed(list(request.node.iter_markers("lmstudio_server"))):
        if marker.args:
            raise TypeError("@pytest.mark.lmstudio_server takes keyword arguments only")
        options.update(marker.kwargs)
    port = options.pop("port")
    server = ThreadedStandInServer(port, **options).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lmstudio_host(lmstudio_server: ThreadedStandInServer) -> str:
    """``"127.0.0.1:PORT"`` of a fresh stand-in server (what clients take as ``api_host``)."""
    return lmstudio_server.host
