"""Connecting, discovery, authentication, drops, reconnects, keepalive, closing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

import lmstudio_async as lms
from lmstudio_async._io.transport import DEFAULT_PORTS, parse_api_host
from lmstudio_async._protocol.chat import coerce_chat
from lmstudio_async._protocol.prediction import predict_creation
from lmstudio_async.testing import StandInServer, ThreadedStandInServer

from ._support import LLAMA, SMOL, eventually

TOKEN = "sk-lm-abcDEF78:abcDEF7890abcDEF7890"
OTHER_TOKEN = "sk-lm-abcDEF78:zzzzzz7890abcDEF7890"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- host parsing and discovery ---------------------------------------------------------


class _NoStreamWriter:
    output_size = 0


class CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` argument."""

    def __init__(self, method: str, url: object, **kwargs: object) -> None:
        kwargs.setdefault("stream_writer", _NoStreamWriter())
        super().__init__(method, url, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "http", "ws"),
    [
        ("localhost:1234", "http://localhost:1234", "ws://localhost:1234"),
        ("http://127.0.0.1:41343", "http://127.0.0.1:41343", "ws://127.0.0.1:41343"),
        ("ws://127.0.0.1:41343/", "http://127.0.0.1:41343", "ws://127.0.0.1:41343"),
        ("wss://example.com:443", "https://example.com:443", "wss://example.com:443"),
        ("https://example.com:8443", "https://example.com:8443", "wss://example.com:8443"),
        ("[::1]:1234", "http://[::1]:1234", "ws://[::1]:1234"),
        ("ws://[2001:db8::1]:1", "http://[2001:db8::1]:1", "ws://[2001:db8::1]:1"),
        ("my-host.local:65535", "http://my-host.local:65535", "ws://my-host.local:65535"),
    ],
)
def test_parse_api_host(value: str, http: str, ws: str) -> None:
    assert parse_api_host(value) == (http, ws)


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("localhost", "needs an explicit port"),
        ("localhost:", "is not a number"),
        ("ftp://x:1", "unsupported scheme 'ftp'"),
        ("http://h:99999", "port 99999 is out of range"),
        ("localhost:99999", "port 99999 is out of range"),
        ("localhost:0", "port 0 is out of range"),
        ("http://127.0.0.1:1:2", "more than one ':'"),
        ("::1:1234", "more than one ':'"),
        (":1234", "has no host name"),
        ("http://:1234", "has no host name"),
        ("[::1:1234", "not a bracketed IPv6 address"),
        ("[]:1234", "not a bracketed IPv6 address"),
        ("[zz::1]:1234", "not a bracketed IPv6 address"),
        ("local<host>:1", "not a valid host name"),
        ("localhost:12a4", "is not a number"),
        ("a b:1", "is not of the form"),
        ("", "is not of the form"),
    ],
)
def test_bad_api_host_is_a_value_error_naming_it(value: str, what: str) -> None:
    with pytest.raises(lms.LMStudioValueError, match=re.escape(repr(value))) as info:
        lms.AsyncClient(value)
    assert what in str(info.value)


def test_api_host_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(lms.LMStudioValueError, match="api_token=") as info:
        lms.AsyncClient("http://user:s3cret@localhost:1234")
    assert "s3cret" not in str(info.value)
    assert "localhost:1234" in str(info.value)


@pytest.mark.parametrize("scheme", ["", "ws://", "http://"])
async def test_valid_hosts_work_end_to_end(
    lmstudio_server: ThreadedStandInServer, scheme: str
) -> None:
    async with lms.AsyncClient(scheme + lmstudio_server.host) as client:
        assert await client.llm.list_loaded() == []


async def test_an_explicit_host_never_probes_for_lm_studio(
    lmstudio_server: ThreadedStandInServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (The official clients' #157: LM Studio behind a proxy that only passes WebSockets,
    # where GET /lmstudio-greeting fails.) Only a client without a host looks for one.
    from lmstudio_async._io import transport

    async def no_probe(*args: object) -> bool:
        raise AssertionError("an explicit host was probed")

    monkeypatch.setattr(transport, "probe_lmstudio", no_probe)
    async with lms.AsyncClient(lmstudio_server.host) as client:
        assert await client.llm.list_loaded() == []
        await client.llm.load(SMOL)


async def test_discovery_probes_ports_concurrently_first_answer_wins() -> None:
    winner = DEFAULT_PORTS[3]
    with aioresponses() as mocked:
        for port in DEFAULT_PORTS:
            url = f"http://127.0.0.1:{port}/lmstudio-greeting"
            if port == winner:
                mocked.get(url, payload={"lmstudio": True}, response_class=CompatResponse)
            elif port == DEFAULT_PORTS[0]:
                mocked.get(url, status=200, body="not json", response_class=CompatResponse)
            elif port == DEFAULT_PORTS[1]:
                mocked.get(url, payload={"something": "else"}, response_class=CompatResponse)
            else:
                mocked.get(url, exception=ConnectionRefusedError())
        client = lms.AsyncClient()
        try:
            assert await client._transport.resolve_host() == f"127.0.0.1:{winner}"
            assert client.api_host == f"127.0.0.1:{winner}"
        finally:
            await client.aclose()


async def test_discovery_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMSTUDIO_API_HOST", raising=False)
    with aioresponses() as mocked:
        for port in DEFAULT_PORTS:
            mocked.get(
                f"http://127.0.0.1:{port}/lmstudio-greeting", exception=ConnectionRefusedError()
            )
        async with lms.AsyncClient() as client:
            with pytest.raises(lms.LMStudioConnectionError, match="not running on this machine"):
                await client.llm.list_loaded()


async def test_env_host(
    monkeypatch: pytest.MonkeyPatch, lmstudio_server: ThreadedStandInServer
) -> None:
    monkeypatch.setenv("LMSTUDIO_API_HOST", lmstudio_server.host)
    async with lms.AsyncClient() as client:
        assert client.api_host == lmstudio_server.host
        assert await client.llm.list_loaded() == []


# --- connection failures are prompt and typed ----------------------------------------------


async def test_refused_connection_names_the_host() -> None:
    host = f"127.0.0.1:{free_port()}"
    async with lms.AsyncClient(host) as client:
        start = time.monotonic()
        with pytest.raises(lms.LMStudioConnectionError, match=re.escape(host)) as info:
            await client.llm.list_loaded()
        assert time.monotonic() - start < 2
        assert info.value.host == host


@contextlib.asynccontextmanager
async def fake_peer(path: str, handler: Any) -> AsyncIterator[str]:
    """An aiohttp server that is not LM Studio; yields its host:port."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_peer_that_is_not_lmstudio() -> None:
    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="nope")

    async with fake_peer("/{tail:.*}", not_found) as host, lms.AsyncClient(host) as client:
        with pytest.raises(lms.ProtocolError, match="does not look like LM Studio"):
            await client.llm.list_loaded()


async def test_peer_that_answers_auth_with_garbage() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_str("hello there")
        await ws.receive()
        return ws

    async with fake_peer("/{ns}", handler) as host, lms.AsyncClient(host) as client:
        with pytest.raises(lms.ProtocolError, match="unexpected reply"):
            await client.llm.list_loaded()


@pytest.mark.lmstudio_server(api_token=TOKEN)
async def test_wrong_or_missing_token(
    lmstudio_server: ThreadedStandInServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LMSTUDIO_API_TOKEN", raising=False)
    for token in (OTHER_TOKEN, None):
        async with lms.AsyncClient(lmstudio_server.host, api_token=token) as client:
            with pytest.raises(
                lms.AuthenticationError, match=re.escape(lmstudio_server.host)
            ) as info:
                await client.llm.list_loaded()
            assert "zzzzzz7890abcDEF7890" not in str(info.value)
    async with lms.AsyncClient(lmstudio_server.host, api_token=TOKEN) as client:
        assert await client.llm.list_loaded() == []
    monkeypatch.setenv("LMSTUDIO_API_TOKEN", TOKEN)
    async with lms.AsyncClient(lmstudio_server.host) as client:
        assert await client.llm.list_loaded() == []


def test_malformed_token_is_rejected_without_echoing_it() -> None:
    with pytest.raises(lms.LMStudioValueError, match="malformed") as info:
        lms.AsyncClient("localhost:1234", api_token="sk-lm-secretsecret")
    assert "secretsecret" not in str(info.value)


@pytest.mark.parametrize("token", [5, b"sk-lm-abcd1234:abcdefghij0123456789", ["sk-lm"]])
def test_a_token_that_is_not_a_str_is_a_value_error(token: object) -> None:
    message = r"^api_token must be a str or None, got "
    with pytest.raises(lms.LMStudioValueError, match=message) as info:
        lms.AsyncClient("localhost:1234", api_token=token)  # type: ignore[arg-type]
    assert "abcdefghij" not in str(info.value)


async def test_token_never_in_repr_logs_or_errors(
    lmstudio_server: ThreadedStandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = lms.AsyncClient(lmstudio_server.host, api_token=TOKEN)
    try:
        await client.llm.list_loaded()
        with pytest.raises(lms.ModelNotFoundError) as info:
            await client.llm.unload("nope")
        texts = [repr(client), str(info.value), repr(client.llm), caplog.text]
        for text in texts:
            assert "abcDEF7890abcDEF7890" not in text
            assert TOKEN not in text
    finally:
        await client.aclose()


@pytest.mark.lmstudio_server(api_token=TOKEN)
async def test_unanswered_auth_times_out(lmstudio_server: ThreadedStandInServer) -> None:
    lmstudio_server.faults.ignore_auth = True
    async with lms.AsyncClient(
        lmstudio_server.host, api_token=TOKEN, timeout=lms.Timeouts(connect=0.4)
    ) as client:
        start = time.monotonic()
        with pytest.raises(lms.LMStudioTimeoutError) as info:
            await client.llm.list_loaded()
        assert info.value.kind == "connect"
        assert time.monotonic() - start < 1.5


# --- drops and reconnects -----------------------------------------------------------------


@pytest.mark.lmstudio_server(load_seconds=2.0)
async def test_drop_mid_load_fails_in_flight_then_reconnects(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.list_loaded()
    lmstudio_server.faults.drop_after(5, namespace="llm")
    start = time.monotonic()
    with pytest.raises(lms.LMStudioConnectionError, match="lost"):
        await client.llm.load(LLAMA)
    assert time.monotonic() - start < 1.5
    # the server aborts a load whose connection dropped; the next call reconnects
    assert await client.llm.list_loaded() == []
    assert lmstudio_server.loaded_instances() == []


async def test_drop_fails_every_in_flight_call(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.list_loaded()
    lmstudio_server.faults.silent = True
    calls = [asyncio.create_task(client.llm.list_loaded()) for _ in range(10)]
    await asyncio.sleep(0.1)
    lmstudio_server.faults.silent = False
    lmstudio_server.faults.drop_connections()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, lms.LMStudioConnectionError) for r in results), results
    assert await client.llm.list_loaded() == []


async def test_a_call_right_after_the_stand_in_drops_the_connections_reconnects(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # faults.drop_connections() returns once the client's kernel has the end of the
    # connection, so a call made at once, with nothing in flight, reconnects (the
    # stand-in closed the socket one loop step later: 2 to 6 of 10 such calls failed).
    for _ in range(10):
        await client.system.version()
        assert lmstudio_server.faults.drop_connections() == 1
        await client.system.version()


async def test_server_restart_between_calls() -> None:
    server = StandInServer(port=0, load_seconds=0.0)
    await server.start()
    try:
        async with lms.AsyncClient(server.host) as client:
            await client.llm.load(SMOL)
            await server.restart(reset_state=True)
            assert await client.llm.list_loaded() == []
            await client.llm.load(SMOL)
            assert len(await client.llm.list_loaded()) == 1
    finally:
        await server.stop()


async def test_keepalive_detects_a_dead_peer_with_no_call_waiting(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    timeouts = lms.Timeouts(keepalive_interval=0.1, keepalive_timeout=0.4)
    async with lms.AsyncClient(lmstudio_server.host, timeout=timeouts) as client:
        await client.llm.list_loaded()
        sock = client._transport.socket("llm")
        assert sock.is_open
        await asyncio.sleep(0.6)  # keepAlive answered: still open
        assert sock.is_open
        assert lmstudio_server.received_messages(type="keepAlive")
        lmstudio_server.faults.silent = True
        await eventually(lambda: not sock.is_open, timeout=2.0)
        lmstudio_server.faults.silent = False
        assert await client.llm.list_loaded() == []  # reconnected


async def test_a_socket_the_server_closed_while_the_loop_was_busy_is_replaced() -> None:
    # The server restarts (closing our sockets with 1001) while this loop is blocked, so
    # the close frames are still unread when the next calls start: they must reconnect,
    # not fail once with "server shutdown".
    with ThreadedStandInServer(load_seconds=0.0) as server:
        async with lms.AsyncClient(server.host) as client:
            await client.llm.list_loaded()
            await client.embedding.list_loaded()
            server.restart()  # synchronous: blocks this event loop throughout
            time.sleep(0.1)  # noqa: ASYNC251 -- and a little more, as a busy loop would
            assert await client.llm.list_loaded() == []  # an RPC
            server.restart()
            model = await client.llm.load(SMOL)  # a channel
            assert model.identifier == SMOL
            server.restart(reset_state=True)
            results = await asyncio.gather(*(client.llm.list_loaded() for _ in range(20)))
            assert results == [[]] * 20
            server.restart()
            assert await client.embedding.list_loaded() == []
            assert server.connection_count() == 1  # /llm waits for its next call


@pytest.mark.parametrize(
    "kind",
    ["malformed_json", "binary", "oversized", "unknown_call", "unknown_channel", "unsolicited"],
)
async def test_bad_frames_do_not_kill_the_reader(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, kind: str
) -> None:
    await client.llm.list_loaded()
    assert lmstudio_server.faults.inject(kind, namespace="llm") == 1  # type: ignore[arg-type]
    await client.llm.load(SMOL)
    assert [h.identifier for h in await client.llm.list_loaded()] == [SMOL]
    assert client._transport.socket("llm").is_open


async def test_server_warning_is_logged(
    client: lms.AsyncClient,
    lmstudio_server: ThreadedStandInServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await client.llm.list_loaded()
    lmstudio_server.faults.inject(
        "unsolicited",
        namespace="llm",
        payload={"type": "communicationWarning", "warning": "odd", "kind": "rpcUnknown"},
    )
    await client.llm.list_loaded()
    assert "rpcUnknown: odd" in caplog.text
    # A cancel that raced the end of its channel: kept, but logged at debug level only.
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="lmstudio_async")
    late = "Received channelSend for unknown channel, channelId = 7"
    lmstudio_server.faults.inject(
        "unsolicited",
        namespace="llm",
        payload={"type": "communicationWarning", "warning": late, "kind": "channelUnknown"},
    )
    await client.llm.list_loaded()
    [record] = [r for r in caplog.records if "channelUnknown" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert client._transport.socket("llm").warnings[-1] == f"channelUnknown: {late}"


# --- closing ------------------------------------------------------------------------------


@pytest.mark.lmstudio_server(load_seconds=3.0)
async def test_close_fails_in_flight_calls_and_leaks_nothing(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    before = asyncio.all_tasks()
    client = lms.AsyncClient(lmstudio_server.host)
    await client.llm.list_loaded()
    load = asyncio.create_task(client.llm.load(LLAMA))
    await asyncio.sleep(0.2)
    await client.aclose()
    with pytest.raises(lms.ClientClosedError, match="closed"):
        await load
    assert asyncio.all_tasks() - before == set()
    with pytest.raises(lms.ClientClosedError):
        await client.llm.list_loaded()
    await eventually(lambda: lmstudio_server.connection_count() == 0)
    await eventually(lambda: lmstudio_server.loaded_instances() == [])


async def test_a_dispatch_bug_fails_calls_instead_of_hanging_them(
    lmstudio_server: ThreadedStandInServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Replies are routed inside the socket's data_received: an exception there must end
    # the socket (failing what waits on it), and the next call must reconnect.
    from lmstudio_async._io import transport as _transport

    original = _transport.NamespaceSocket._dispatch
    broken = [False]

    def dispatch(self: _transport.NamespaceSocket, text: bool, data: bytes) -> None:
        if broken[0]:
            broken[0] = False
            raise RuntimeError("dispatch bug")
        original(self, text, data)

    monkeypatch.setattr(_transport.NamespaceSocket, "_dispatch", dispatch)
    async with lms.AsyncClient(lmstudio_server.host) as client:
        await client.llm.list_loaded()
        broken[0] = True
        with pytest.raises(lms.LMStudioConnectionError, match="dispatch bug"):
            await client.llm.list_loaded()
        assert "dispatching a message failed" in caplog.text
        assert await client.llm.list_loaded() == []  # a fresh socket
    await eventually(lambda: lmstudio_server.connection_count() == 0)


async def test_many_concurrent_calls_and_channels(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.load_seconds = 0.0
    results = await asyncio.gather(*(client.llm.list_loaded() for _ in range(1000)))
    assert all(r == [] for r in results)
    handles = await asyncio.gather(*(client.llm.load(SMOL) for _ in range(100)))
    assert len({h.identifier for h in handles}) == 100
    assert len(lmstudio_server.loaded_instances()) == 100


def test_a_client_is_reused_by_a_new_event_loop_once_the_old_one_has_ended(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    """A module-level client used by one ``asyncio.run`` after another (scripts, tests with a
    loop per test): the first loop's shutdown closed its socket, the next loop opens its own,
    and a handle from the first loop still works in the second."""
    client = lms.AsyncClient(lmstudio_server.host)

    async def load() -> lms.LLM:
        return await client.llm.load("llama-3.2-1b-instruct", identifier="first-loop")

    async def use(handle: lms.LLM) -> list[str]:
        await handle.unload()
        return [m.identifier for m in await client.llm.list_loaded()]

    async def close() -> None:
        await client.aclose()

    handle = asyncio.run(load())
    assert asyncio.run(use(handle)) == []
    assert lmstudio_server.loaded_instances() == []
    asyncio.run(close())
    assert lmstudio_server.connection_count() == 0


def test_a_client_still_in_use_by_an_open_loop_refuses_another(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    client = lms.AsyncClient(lmstudio_server.host)

    async def use() -> None:
        await client.llm.list_loaded()

    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(use())  # the loop stays open, and so does its socket
        with pytest.raises(lms.LMStudioError, match="one client per event loop"):
            asyncio.run(use())
        first.run_until_complete(client.aclose())
    finally:
        first.close()


async def test_close_while_connecting_leaks_nothing(lmstudio_server: ThreadedStandInServer) -> None:
    before = asyncio.all_tasks()
    client = lms.AsyncClient(lmstudio_server.host)
    call = asyncio.create_task(client.llm.list_loaded())
    await asyncio.sleep(0)  # the call is now opening the socket
    await client.aclose()
    with pytest.raises(lms.ClientClosedError):
        await call
    assert asyncio.all_tasks() - before == set()
    await eventually(lambda: lmstudio_server.connection_count() == 0)


def test_a_socket_does_not_outlive_its_event_loop(lmstudio_server: ThreadedStandInServer) -> None:
    client = lms.AsyncClient(lmstudio_server.host)

    async def use() -> None:
        await client.llm.list_loaded()
        assert lmstudio_server.connection_count() == 1

    asyncio.run(use())  # no aclose: asyncio.run's shutdown must drop the socket
    deadline = time.monotonic() + 5
    while lmstudio_server.connection_count() != 0:
        assert time.monotonic() < deadline, "the socket outlived its event loop"
        time.sleep(0.02)
    assert not client._transport._sockets["llm"].is_open


@pytest.mark.lmstudio_server(tokens_per_second=200)
async def test_a_channel_of_a_lost_connection_forgotten_late_leaves_the_new_ones_alone(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # Channel ids start again at 0 on every connection. A channel of a dropped connection
    # that is forgotten late (a reaper settling, a result released) must not unregister
    # the new connection's channel that has the same id.
    llm = await client.llm.model(SMOL)  # the getOrLoad channel: id 0
    sock = client._transport.socket("llm")
    creation = predict_creation(llm._specifier(), coerce_chat("Hi"), None)
    stale = await sock.open_channel("predict", creation)  # id 1
    lmstudio_server.faults.drop_connections()

    async def drain() -> None:
        while await stale.receive(5.0, None) is not None:
            pass

    with pytest.raises(lms.LMStudioConnectionError):
        await drain()
    config = lms.PredictionConfig(max_tokens=40)
    first = llm.respond_stream("Write a story.", config=config)  # id 0 on the new connection
    second = llm.respond_stream("Write a story.", config=config)  # id 1
    await first.__anext__()
    await second.__anext__()
    sock.forget_channel(stale)

    async def rest(stream: lms.PredictionStream) -> str:
        async for _ in stream:
            pass
        return stream.result().stop_reason

    async with asyncio.timeout(10):  # (before the fix, the second one waited for ever)
        reasons = await asyncio.gather(rest(first), rest(second))
    assert set(reasons) <= {"eosFound", "maxPredictedTokensReached"}  # both whole replies

