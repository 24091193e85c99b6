from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from lmstudio_async.testing import StandInServer

from ._wire import RawClient


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[StandInServer]:
    """An in-loop stand-in; options from @pytest.mark.lmstudio_server(...)."""
    options: dict[str, object] = {"load_seconds": 0.02}
    for marker in reversed(list(request.node.iter_markers("lmstudio_server"))):
        options.update(marker.kwargs)
    async with StandInServer(0, **options) as srv:  # type: ignore[arg-type]
        yield srv


@pytest.fixture
async def client(server: StandInServer) -> AsyncIterator[RawClient]:
    async with RawClient(server.host) as c:
        yield c
