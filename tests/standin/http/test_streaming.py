"""Streaming over HTTP: real token-by-token timing with slow tokens, a client that goes away
stops the generation, and the OpenAI streams end as OpenAI's do."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from lmstudio_async.testing import StandInServer

from ._http import call, stream

SMOL = "smollm2-135m-instruct"
REQUEST = {
    "model": SMOL,
    "messages": [{"role": "user", "content": "Tell me a long story about the old port"}],
    "stream": True,
}


def _last_used(server: StandInServer) -> float:
    [inst] = server.loaded_instances()
    assert inst.last_used_time is not None
    return inst.last_used_time


@pytest.mark.lmstudio_server(tokens_per_second=25.0)
async def test_chunks_arrive_at_the_token_rate(server: StandInServer) -> None:
    server.preload(SMOL)
    times: list[float] = []
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
        session.post(server.url + "/v1/chat/completions", json=REQUEST) as resp,
    ):
        async for line in resp.content:
            if line.startswith(b"data: {"):
                times.append(time.monotonic())
            if len(times) == 7:
                break
    # 25 tokens/s: five tokens after the second take about 0.2 s (not all at once)
    assert 0.12 < times[6] - times[1] < 1.0, times


@pytest.mark.lmstudio_server(tokens_per_second=20.0)
async def test_a_client_that_goes_away_stops_the_generation(server: StandInServer) -> None:
    server.preload(SMOL)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        resp = await session.post(server.url + "/v1/chat/completions", json=REQUEST)
        assert (await resp.content.readline()).startswith(b"data: {")
        before = _last_used(server)
        for _ in range(4):  # two lines per chunk: data and the blank separator
            await asyncio.wait_for(resp.content.readline(), 5)
        during = _last_used(server)
        assert during > before  # generating: every token resets the idle timer
        resp.close()  # the client goes away mid-stream
    await asyncio.sleep(0.3)
    settled = _last_used(server)
    await asyncio.sleep(0.4)  # at 20 tokens/s, 8 more tokens would have been generated
    assert _last_used(server) == settled


async def test_completions_usage_comes_in_a_last_chunk_without_choices(
    server: StandInServer,
) -> None:
    body = {
        "model": SMOL,
        "prompt": "Once",
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = await stream(server.url, "/v1/completions", body)
    chunks = [data for _name, data in events if data != "[DONE]"]
    assert events[-1] == (None, "[DONE]")
    *_, finish, tail = chunks
    assert finish["choices"][0]["finish_reason"] == "length"
    assert "usage" not in finish
    assert tail["choices"] == []
    assert tail["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}


async def test_a_response_cut_by_max_output_tokens_ends_incomplete(server: StandInServer) -> None:
    body = {"model": SMOL, "input": "Tell me a story", "max_output_tokens": 3}
    events = await stream(server.url, "/v1/responses", {**body, "stream": True})
    name, last = events[-1]
    assert name == last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"
    [item_done] = [data for name, data in events if name == "response.output_item.done"]
    assert item_done["item"]["status"] == "incomplete"
    assert "response.completed" not in [name for name, _data in events]
    status, reply = await call(server.url, "POST", "/v1/responses", body)
    assert status == 200
    assert (reply["status"], reply["output"][0]["status"]) == ("incomplete", "incomplete")
    events = await stream(
        server.url, "/v1/responses", {**body, "max_output_tokens": 500, "stream": True}
    )
    assert events[-1][0] == "response.completed"
    assert events[-1][1]["response"]["output"][0]["status"] == "completed"
