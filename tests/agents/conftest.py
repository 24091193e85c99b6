from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

LLAMA = "llama-3.2-1b-instruct"  # trained for tool use
SMOL = "smollm2-135m-instruct"  # no tool use, no vision
VISION = "mobilevlm_v2-1.7b"


@pytest.fixture
async def client(lmstudio_server: ThreadedStandInServer) -> AsyncIterator[lms.AsyncClient]:
    async with lms.AsyncClient(lmstudio_server.host) as c:
        yield c


@pytest.fixture
async def llm(client: lms.AsyncClient) -> lms.LLM:
    return await client.llm.model(LLAMA)
