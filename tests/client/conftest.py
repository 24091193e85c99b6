from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer


@pytest.fixture
async def client(lmstudio_server: ThreadedStandInServer) -> AsyncIterator[lms.AsyncClient]:
    """An AsyncClient connected to this test's stand-in."""
    async with lms.AsyncClient(lmstudio_server.host) as c:
        yield c
