"""A tiny HTTP helper for the stand-in's REST and OpenAI-compatible endpoints (aiohttp)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=20)


async def call(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = None,
) -> tuple[int, Any]:
    """Send one request; returns the status and the decoded JSON body (or the text)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.request(method, base + path, data=data, headers=headers) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def parse_sse(text: str) -> list[tuple[str | None, Any]]:
    """``(event name or None, decoded data)`` for each SSE message; ``[DONE]`` stays a string."""
    events: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        payload = "\n".join(data)
        events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
    return events


async def stream(base: str, path: str, body: Any) -> list[tuple[str | None, Any]]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(base + path, json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        return parse_sse(await resp.text())
