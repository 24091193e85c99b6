"""Arbitrary frames never break a connection."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmstudio_async.testing import ThreadedStandInServer

from ._wire import RawClient

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
TYPES = [
    "keepAlive",
    "rpcCall",
    "channelCreate",
    "channelSend",
    "channelAck",
    "signalSubscribe",
    "writableSignalUpdate",
    "communicationWarning",
    "bogus",
]
ENDPOINTS = ["listLoaded", "getModelInfo", "getLoadConfig", "unloadModel", "loadModel", "getOrLoad"]
envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={
        "endpoint": st.sampled_from(ENDPOINTS) | st.text(max_size=5),
        "callId": st.integers(-2, 5) | json_values,
        "channelId": st.integers(-2, 5) | json_values,
        "parameter": json_values,
        "creationParameter": json_values,
        "message": json_values,
        "ackId": json_values,
    },
)
frames = st.lists(
    envelopes.map(json.dumps) | json_values.map(json.dumps) | st.text(max_size=20), max_size=8
)


async def _exercise(host: str, batch: list[str]) -> None:
    async with RawClient(host) as client:
        sock = await client.connect("llm")
        for frame in batch:
            await sock.send_raw(frame)
        await sock.send({"type": "keepAlive"})
        while True:  # other replies (warnings, results) may come first
            reply: Any = await sock.recv()
            if reply == {"type": "keepAliveAck"}:
                break
        await sock.ws.close()


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=frames)
def test_connection_survives_anything(
    lmstudio_server: ThreadedStandInServer, batch: list[str]
) -> None:
    asyncio.run(_exercise(lmstudio_server.host, batch))
