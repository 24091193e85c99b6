"""``ssl=`` through the sync facade: ``Client`` and ``configure_default_client`` over wss://."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from client.test_websocket_io import Peer, _self_signed, raw_server  # tests/ is on sys.path

import lmstudio_async as lms
from lmstudio_async._io import transport as _transport
from lmstudio_async._sync import client as _sync


async def _answer_forever(peer: Peer) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        while True:
            await peer.answer_rpc([])


@contextlib.contextmanager
def tls_server(tmp: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """A raw wss:// server in its own thread answering every listLoaded with []."""
    cert, key = _self_signed(tmp)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    started, stop = threading.Event(), asyncio.Event()

    async def main() -> None:
        async with raw_server(tls=server_ctx) as server:
            ready.append(server.host("wss"))
            started.set()
            answering: list[asyncio.Task[None]] = []
            peers = asyncio.ensure_future(server.peers.get())
            stopping = asyncio.ensure_future(stop.wait())
            while True:
                await asyncio.wait([peers, stopping], return_when=asyncio.FIRST_COMPLETED)
                if stopping.done():
                    break
                answering.append(asyncio.ensure_future(_answer_forever(peers.result())))
                peers = asyncio.ensure_future(server.peers.get())
            peers.cancel()
            for task in answering:
                task.cancel()
            await asyncio.gather(peers, *answering, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10)
        yield ready[0], ssl.create_default_context(cafile=str(cert))
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_client_and_default_client_take_ssl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The raw peers never answer a close frame: give up on them after 0.2 s, not 2 s.
    monkeypatch.setattr(_transport, "_WS_TIMEOUT", aiohttp.ClientWSTimeout(ws_close=0.2))
    with tls_server(tmp_path) as (host, trusting):
        with lms.Client(host, ssl=trusting) as client:
            assert client.llm.list_loaded() == []
        # (A certificate the client does not trust: tests/client/test_websocket_io.py.)
        try:
            _sync.configure_default_client(host, ssl=trusting)
            assert _sync.get_default_client().llm.list_loaded() == []
        finally:
            _sync.configure_default_client()  # closes it, back to the defaults
