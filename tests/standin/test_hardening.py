"""Hostile or merely huge input: the stand-in stays responsive, bounded and typed.

Each test here guards one finding of the protocol audit (see the git log of this file):
deep JSON, malformed structured-output settings, work that used to grow without bound in
the event loop, and logs that used to grow without bound in memory.
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import random
import string
import time
import tracemalloc
from typing import Any

import aiohttp
import openai
import pytest

from lmstudio_async.testing import StandInServer, ThreadedStandInServer
from lmstudio_async.testing import _files as files
from lmstudio_async.testing import _textgen as textgen
from lmstudio_async.testing._server import CANCEL_LOG_SIZE
from lmstudio_async.testing._state import NOTIFICATION_LOG_BYTES, NOTIFICATION_LOG_SIZE
from lmstudio_async.testing._textgen import MAX_EMBEDDED_WORDS
from lmstudio_async.testing._toolcalls import ToolSpec, plan_tool_round

from ._wire import RawClient, Socket, messages, stack
from .http._http import call

BOMB = "[" * 5000 + "]" * 5000  # msgspec gives up near a thousand levels


def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# --- deeply nested JSON ----------------------------------------------------------------------


async def test_deeply_nested_frame_is_dropped_and_the_connection_lives_on(
    server: StandInServer, client: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lmstudio_async.testing")
    # after authentication: dropped without a reply (protocol.md §2.7)
    llm = await client.connect("llm")
    await llm.send_raw(BOMB)
    await llm.barrier()
    frame = server.received_frames(namespace="llm")[-2]
    assert frame.message is None
    assert frame.raw == BOMB
    # before authentication: ignored like any invalid packet (§1.4)
    raw = await client.raw("system")
    await raw.send_raw(BOMB.encode())  # binary frames are decoded the same way
    await raw.send({"authVersion": 1, "clientIdentifier": "guest:x", "clientPasskey": "p"})
    assert await raw.recv() == {"success": True}
    await raw.barrier()
    assert "nested too deeply" in caplog.text
    _no_errors_logged(caplog)


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/api/v0/completions", "/api/v1/chat", "/v1/embeddings"]
)
async def test_deeply_nested_http_body_is_a_400(
    server: StandInServer, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, body = await call(server.url, "POST", path, raw=('{"model":' + BOMB + "}").encode())
    assert status == 400, body
    error = body["error"]
    assert error.get("code") == "invalid_json", error
    assert "nested too deeply" in error["message"]
    # a body that msgspec still decodes but that is too deep to handle is a 400 as well
    deep = "[" * 900 + "]" * 900
    body_text = '{"model": "llama-3.2-1b-instruct", "messages": ' + deep + ', "input": ' + deep
    status, body = await call(server.url, "POST", path, raw=(body_text + "}").encode())
    assert 400 <= status < 500, body
    _no_errors_logged(caplog)


# --- tool-call planning is linear in the message ---------------------------------------------

LOOKUP = ToolSpec(
    "lookup",
    "look something up",
    {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
)
ADD = ToolSpec(
    "add",
    "add two numbers",
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)


@pytest.mark.parametrize(
    "text",
    [
        "\u201c" * 40_000,  # opening curly quotes that never close: each scanned to the end
        '"a" 1 ' * 8_000,  # numbers checked against every quoted span
        "then " * 96_000,  # each "then" part appended to a growing string
    ],
    ids=["curly-quotes", "quotes-and-numbers", "thens"],
)
def test_tool_planning_time_is_linear(text: str) -> None:
    started = time.perf_counter()
    plan_tool_round([{"role": "user", "text": text}], [LOOKUP, ADD])
    assert time.perf_counter() - started < 2.0  # quadratic: 5 to 15 s


def test_a_curly_quoted_text_holds_no_opening_quote() -> None:
    planned = plan_tool_round(
        [{"role": "user", "text": "lookup \u201c\u201cHarbor\u201d and \u201cx"}], [LOOKUP]
    )
    assert [c.arguments for c in planned.calls] == [{"q": "Harbor"}]


@pytest.mark.lmstudio_server(tokens_per_second=100_000)  # simulated prompt processing: 40 ms
async def test_predict_with_tools_plans_a_huge_prompt_quickly(
    server: StandInServer, client: RawClient
) -> None:
    server.preload("llama-3.2-1b-instruct")
    llm = await client.connect("llm")
    tools = {
        "type": "toolArray",
        "tools": [
            {"type": "function", "function": {"name": "lookup", "parameters": LOOKUP.parameters}}
        ],
    }
    param: dict[str, Any] = {
        "modelSpecifier": {"type": "query", "query": {"identifier": "llama-3.2-1b-instruct"}},
        "history": {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "\u201c" * 40_000}]}]
        },
        "predictionConfigStack": stack(
            **{
                "llm.prediction.tools": tools,
                "llm.prediction.maxPredictedTokens": {"checked": True, "value": 5},
            }
        ),
    }
    started = time.perf_counter()
    frames = await llm.channel("predict", param)
    assert time.perf_counter() - started < 3.0  # quadratic planning: about 15 s
    assert messages(frames)[-1]["type"] == "success"


# --- records kept for inspection are bounded -------------------------------------------------


async def _pipelined_rpcs(sock: Socket, endpoint: str, parameters: list[Any]) -> list[Any]:
    """Send every call at once, then read their replies (in order: RPCs run inline)."""
    for n, parameter in enumerate(parameters):
        await sock.send(
            {"type": "rpcCall", "endpoint": endpoint, "callId": n, "parameter": parameter}
        )
    return [await sock.recv() for _ in parameters]


async def test_cancel_log_keeps_the_newest_and_counts_them_all(
    server: StandInServer, client: RawClient
) -> None:
    llm = await client.connect("llm")
    total = CANCEL_LOG_SIZE + 500
    for n in range(total):  # cancels for unknown channels: warned 5 times, then silence
        await llm.send({"type": "channelSend", "channelId": n, "message": {"type": "cancel"}})
    for _ in range(5):
        assert (await llm.recv())["kind"] == "channelUnknown"
    await llm.barrier()
    assert server.cancel_count == total
    kept = server.cancels()
    assert len(kept) == CANCEL_LOG_SIZE
    assert [c.channel_id for c in kept] == list(range(500, total))
    server.clear_logs()
    assert server.cancel_count == 0
    assert server.cancels() == []


async def test_experiment_flags_are_bounded(client: RawClient) -> None:
    from lmstudio_async.testing._endpoints import MAX_EXPERIMENT_FLAGS, MAX_FLAG_CODE

    system = await client.connect("system")
    flags = [{"code": f"flag-{n}", "value": True} for n in range(MAX_EXPERIMENT_FLAGS)]
    replies = await _pipelined_rpcs(system, "setExperimentFlag", flags)
    assert {r["type"] for r in replies} == {"rpcResult"}
    refused = [
        {"code": "one-more", "value": True},
        {"code": "x" * (MAX_FLAG_CODE + 1), "value": True},
    ]
    replies = await _pipelined_rpcs(system, "setExperimentFlag", refused)
    assert [r["type"] for r in replies] == ["rpcError", "rpcError"]
    again = [{"code": "flag-0", "value": True}, {"code": "flag-1", "value": False}]
    again.append({"code": "one-more", "value": True})  # room again once one is cleared
    replies = await _pipelined_rpcs(system, "setExperimentFlag", again)
    assert [r["type"] for r in replies] == ["rpcResult"] * 3
    await system.send({"type": "rpcCall", "endpoint": "getExperimentFlags", "callId": 9})
    listed = await system.recv()
    assert len(listed["result"]) == MAX_EXPERIMENT_FLAGS


async def test_notifications_are_bounded_by_count_and_size(
    server: StandInServer, client: RawClient
) -> None:
    system = await client.connect("system")
    many = [{"title": f"n{n}"} for n in range(NOTIFICATION_LOG_SIZE + 10)]
    replies = await _pipelined_rpcs(system, "notify", many)
    assert {r["type"] for r in replies} == {"rpcResult"}
    assert server.notifications() == many[10:]
    big = NOTIFICATION_LOG_BYTES // 3
    huge = [{"title": str(n), "description": "x" * big} for n in range(5)]
    await _pipelined_rpcs(system, "notify", huge)
    kept = server.notifications()
    assert kept[-2:] == huge[-2:]  # the newest are whole
    assert len(kept) < len(huge) + 10  # the oldest had to go
    assert sum(len(n.get("description", "")) for n in kept) <= NOTIFICATION_LOG_BYTES


async def test_uploads_are_bounded_across_clients(
    server: StandInServer, client: RawClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_UPLOADS", 3)
    handles: list[tuple[Socket, str]] = []
    for n in range(4):  # four clients, one upload each: the first client's is forgotten
        sock = await client.connect("files", identifier=f"guest:c{n}", passkey="p")
        reply = await sock.result("uploadFileBase64", {"name": "x" * 5000, "contentBase64": ""})
        handles.append((sock, reply["identifier"]))
    store = server._rt.state.files
    assert len(store) == 3
    assert "guest:c0" not in store.by_client  # no empty entry stays behind
    assert all(
        len(f.name) <= files.MAX_KEPT_NAME for c in store.by_client.values() for f in c.values()
    )
    server.preload("llama-3.2-1b-instruct")
    spec = {"type": "query", "query": {"identifier": "llama-3.2-1b-instruct"}}
    for n, (_sock, identifier) in enumerate(handles):
        llm = await client.connect("llm", identifier=f"guest:c{n}", passkey="p")
        part = {
            "type": "file",
            "name": "x",
            "identifier": identifier,
            "sizeBytes": 0,
            "fileType": "unknown",
        }
        history = {"messages": [{"role": "user", "content": [part]}]}
        frames = await llm.channel(
            "predict",
            {"modelSpecifier": spec, "history": history, "predictionConfigStack": stack()},
        )
        if n == 0:
            assert frames[-1]["error"]["title"] == f'File "{identifier}" not found'
        else:
            assert frames[-1]["type"] == "channelClose", frames[-1]


# --- the frame log is bounded in bytes --------------------------------------------------------


async def test_a_big_frame_is_logged_as_a_preview(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("files")
    content = base64.b64encode(bytes(300_000)).decode()
    parameter = {"name": "zeros.bin", "contentBase64": content}
    assert (await sock.rpc("uploadFileBase64", parameter))["type"] == "rpcResult"
    [frame] = [f for f in server.received_frames(namespace="files") if f.size > 300_000]
    assert frame.truncated
    assert frame.raw == frame.raw[:1024]
    assert len(frame.raw) == 1024
    assert frame.message["endpoint"] == "uploadFileBase64"
    assert frame.message["parameter"]["name"] == "zeros.bin"
    assert frame.message["parameter"]["contentBase64"] == content[:256] + "…"
    [logged] = server.received_messages(type="rpcCall", endpoint="uploadFileBase64")
    assert logged == frame.message
    # a small frame is whole, its message decoded
    small = server.received_frames(namespace="files")[0]
    assert not small.truncated
    assert small.message["authVersion"] == 1
    assert small.size == len(small.raw)


async def test_sent_frames_read_back_as_sent(server: StandInServer, client: RawClient) -> None:
    # The stand-in logs its replies as the bytes it sends; a test reads them back as text
    # frames (str, size in characters), binary frames as bytes, and ``limit`` as the
    # received log does.
    sock = await client.connect("llm")
    spec = {"type": "query", "query": {"identifier": "modèle-é"}}
    reply = await sock.rpc("getModelInfo", {"specifier": spec, "throwIfNotFound": True})
    assert reply["type"] == "rpcError"
    assert server.faults.inject("binary") == 1
    assert (await sock.ws.receive(timeout=5)).type == aiohttp.WSMsgType.BINARY
    frames = server.sent_frames(namespace="llm")
    [error] = [f for f in frames if isinstance(f.raw, str) and "modèle-é" in f.raw]
    assert json.loads(error.raw) == reply
    assert error.size == len(error.raw) < len(error.raw.encode())
    assert not error.truncated
    assert error.message is None
    assert error.namespace == "llm"
    binary = frames[-1]
    assert isinstance(binary.raw, bytes)
    assert binary.size == len(binary.raw)
    assert json.loads(binary.raw) == {"type": "communicationWarning", "warning": "binary frame"}
    assert server.sent_frames(namespace="llm", limit=1) == frames[-1:]
    assert server.sent_frames(namespace="llm", limit=0) == []
    assert server.sent_frames(namespace="embedding") == []
    await sock.ws.close()


async def test_big_frames_before_auth_keep_only_previews(
    server: StandInServer, client: RawClient
) -> None:
    sock = await client.raw("llm")
    for _ in range(8):
        await sock.send_raw("x" * 2_000_000)  # never authenticates
    await sock.send({"authVersion": 1, "clientIdentifier": "guest:x", "clientPasskey": "p"})
    assert await sock.recv() == {"success": True}
    frames = server.received_frames(namespace="llm")
    assert [f.size for f in frames[:8]] == [2_000_000] * 8
    assert all(f.truncated and len(f.raw) == 1024 and f.message is None for f in frames[:8])


@pytest.mark.lmstudio_server(frame_log_bytes=1_000_000)
async def test_frame_log_is_capped_in_bytes(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    text = "y" * 60_000  # kept whole, but only about 16 of them fit in a megabyte
    for n in range(40):
        await llm.send({"type": "communicationWarning", "warning": f"{n} {text}"})
    await llm.barrier()
    frames = server.received_frames(namespace="llm")
    assert 10 < len(frames) < 20
    assert sum(len(f.raw) for f in frames) <= 1_000_000
    assert frames[-2].message == {"type": "communicationWarning", "warning": f"39 {text}"}
    assert frames[-1].message == {"type": "keepAlive"}


async def test_frame_log_keeps_no_decoded_copies(server: StandInServer, client: RawClient) -> None:
    llm = await client.connect("llm")
    # 60 kB of text that decodes into 15 000 dicts (about 1 MB of Python objects)
    frame = json.dumps({"type": "bogus", "items": [{}] * 15_000})
    gc.collect()
    tracemalloc.start()
    try:
        before, _peak = tracemalloc.get_traced_memory()
        for _ in range(20):
            await llm.send_raw(frame)
        await llm.barrier()
        gc.collect()
        after, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 5_000_000  # with decoded copies: 20 x 1 MB
    assert server.received_frames(namespace="llm")[-2].message["items"] == [{}] * 15_000


# --- embeddings of huge input ----------------------------------------------------------------

NOMIC = "text-embedding-nomic-embed-text-v1.5"


def _words(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(count)]


async def test_embedding_a_huge_text_is_quick_and_counts_only_its_start(
    server: StandInServer, client: RawClient
) -> None:
    server.preload(NOMIC)
    emb = await client.connect("embedding")
    spec = {"type": "query", "query": {"identifier": NOMIC}}
    words = _words(100_000, 0)  # 800 kB of distinct words: 25 s of work before
    started = time.perf_counter()
    vector = (
        await emb.result("embedString", {"modelSpecifier": spec, "inputString": " ".join(words)})
    )["embedding"]
    assert time.perf_counter() - started < 3.0  # before: about 25 s
    assert len(vector) == 768
    assert abs(sum(v * v for v in vector) - 1) < 1e-9
    head = " ".join(words[:MAX_EMBEDDED_WORDS])
    other_tail = head + " " + " ".join(_words(50, 1))
    same = await emb.result("embedString", {"modelSpecifier": spec, "inputString": other_tail})
    # Only the start counts: the context's 2046 tokens, and never more than
    # MAX_EMBEDDED_WORDS words (for models with a larger context).
    assert same["embedding"] == vector


async def test_embedding_input_longer_than_the_context_is_truncated_to_it(
    server: StandInServer, client: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    # As recent LM Studio builds do: the first context-length tokens count, the [CLS] and
    # [SEP] markers included, and the truncation is logged.
    server.preload(NOMIC, config={"embedding.load.contextLength": 64})
    emb = await client.connect("embedding")
    spec = {"type": "query", "query": {"identifier": NOMIC}}

    async def embed(words: list[str]) -> list[float]:
        param = {"modelSpecifier": spec, "inputString": " ".join(words)}
        return list((await emb.result("embedString", param))["embedding"])

    words = _words(200, 2)
    with caplog.at_level(logging.INFO, logger="lmstudio_async.testing"):
        whole = await embed(words)
    assert "exceeds its context length (64 tokens); truncated" in caplog.text
    assert await embed(words[:62]) == whole
    assert await embed(words[:61]) != whole
    status, body = await call(
        server.url, "POST", "/v1/embeddings", {"model": NOMIC, "input": " ".join(words)}
    )
    assert status == 200, body
    assert body["data"][0]["embedding"] == pytest.approx(whole, abs=1e-6)
    assert body["usage"]["prompt_tokens"] == 62  # the tokens embedded, not the 200 sent


def test_two_embedding_models_of_one_dimension_give_different_vectors() -> None:
    mini = {"modelKey": "text-embedding-all-minilm-l6-v2", "architecture": "bert"}
    bge = {"modelKey": "text-embedding-bge-small-en-v1.5", "architecture": "bert"}
    text = "The cat sat on the mat."
    assert len(textgen.embed(mini, text)) == len(textgen.embed(bge, text)) == 384
    assert textgen.embed(mini, text) != textgen.embed(bge, text)
    assert textgen.embed(mini, text) == textgen.embed(dict(mini), text)


async def test_http_embeddings_of_many_long_inputs_stay_quick(server: StandInServer) -> None:
    server.preload(NOMIC)
    inputs = [" ".join(_words(5_000, seed)) for seed in range(4)]
    started = time.perf_counter()
    status, body = await call(
        server.url, "POST", "/v1/embeddings", {"model": NOMIC, "input": inputs}
    )
    assert status == 200, body
    assert time.perf_counter() - started < 4.0  # before: about 3 s per input
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]


# --- structured output: bounded work, the token cap, typed errors ----------------------------

LLAMA = "llama-3.2-1b-instruct"
NESTED = {  # a billion values
    "type": "array",
    "minItems": 1000,
    "items": {
        "type": "array",
        "minItems": 1000,
        "items": {"type": "array", "minItems": 1000, "items": {"type": "integer"}},
    },
}


def _cap(tokens: int) -> dict[str, Any]:
    return {"llm.prediction.maxPredictedTokens": {"checked": True, "value": tokens}}


def _predict_param(structured: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {
        "modelSpecifier": {"type": "query", "query": {"identifier": LLAMA}},
        "history": {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Describe a harbor"}]}
            ]
        },
        "predictionConfigStack": stack(**{"llm.prediction.structured": structured, **config}),
    }


def _text(frames: list[dict[str, Any]]) -> str:
    return "".join(m["fragment"]["content"] for m in messages(frames) if m["type"] == "fragment")


def _stop_reason(frames: list[dict[str, Any]]) -> str:
    [done] = [m for m in messages(frames) if m["type"] == "success"]
    return str(done["stats"]["stopReason"])


async def _predict_threaded(
    server: ThreadedStandInServer, structured: dict[str, Any], **config: Any
) -> tuple[list[dict[str, Any]], float]:
    """One predict against a stand-in in its own thread (so a server that never answers
    fails the test instead of hanging it), plus how long another connection's keepAlive
    waited meanwhile."""
    async with RawClient(server.host) as client:
        llm = await client.connect("llm")
        other = await client.connect("system")
        channel = await llm.open_channel("predict", _predict_param(structured, **config))
        started = time.perf_counter()
        await other.barrier()
        waited = time.perf_counter() - started
        frames = await llm.collect(channel, timeout=10)
        return frames, waited


@pytest.mark.parametrize(
    "grammar",
    [
        'root ::= ((""{1000}){1000}){1000}',
        'root ::= ""{1000000000000}',
        'root ::= x{99999}\nx ::= y*\ny ::= ""',
    ],
    ids=["nested-empty", "huge-empty", "empty-rules"],
)
async def test_repeating_an_empty_match_ends_at_once(
    lmstudio_server: ThreadedStandInServer, grammar: str
) -> None:
    lmstudio_server.preload(LLAMA)
    structured = {"type": "gbnf", "gbnfGrammar": grammar}
    frames, waited = await _predict_threaded(lmstudio_server, structured, **_cap(5))
    assert waited < 2.0
    assert _text(frames) == ""  # the only text the grammar accepts
    assert _stop_reason(frames) == "eosFound"


async def test_the_token_cap_bounds_a_huge_grammar_or_schema(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    lmstudio_server.preload(LLAMA)
    huge = [
        {"type": "gbnf", "gbnfGrammar": 'root ::= ("a "){1000000000000}'},
        {"type": "json", "jsonSchema": NESTED},
        {
            "type": "json",
            "jsonSchema": {"type": "object", "minProperties": 10**9, "additionalProperties": {}},
        },
    ]
    for structured in huge:
        frames, waited = await _predict_threaded(lmstudio_server, structured, **_cap(5))
        assert waited < 2.0
        assert len([m for m in messages(frames) if m["type"] == "fragment"]) == 5
        assert _stop_reason(frames) == "maxPredictedTokensReached"
    assert _text(frames) == '{"item1":'  # tokens: { " item1 " :


async def test_without_a_cap_too_much_output_is_a_typed_error(
    lmstudio_server: ThreadedStandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    lmstudio_server.preload(LLAMA)
    cases = [
        ({"type": "gbnf", "gbnfGrammar": 'root ::= ("a "){1000000000000}'}, "too much text"),
        ({"type": "gbnf", "gbnfGrammar": 'root ::= ("a"?){1000000000000}'}, "steps"),
        ({"type": "json", "jsonSchema": NESTED}, "steps"),
    ]
    for structured, reason in cases:
        frames, waited = await _predict_threaded(lmstudio_server, structured)
        assert waited < 2.0
        error = frames[-1]["error"]
        if structured["type"] == "gbnf":
            assert error["title"].startswith("Invalid GBNF grammar: "), error
            assert reason in error["title"]
        else:
            assert (
                error["title"]
                == 'Invalid value for prediction config key "llm.prediction.structured"'
            )
            assert reason in error["cause"]
    _no_errors_logged(caplog)


@pytest.mark.parametrize("tokens", [1, 3, 8, 20, 45])  # maxPredictedTokens is at least 1
@pytest.mark.parametrize("stop", [None, "a", '", "', "}"])
async def test_a_capped_structured_answer_is_a_prefix_of_the_whole_one(
    server: StandInServer, client: RawClient, tokens: int, stop: str | None
) -> None:
    """The early end (enough_text) cuts exactly where the cap cuts the whole answer."""
    server.preload(LLAMA)
    llm = await client.connect("llm")
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 30},
            "n": {"type": "integer"},
        },
    }
    grammar = 'root ::= word (" " word){40}\nword ::= [a-z]+ | "<|eot_id|>"'
    for structured in (
        {"type": "json", "jsonSchema": schema},
        {"type": "gbnf", "gbnfGrammar": grammar},
    ):
        extra: dict[str, Any] = {} if stop is None else {"llm.prediction.stopStrings": [stop]}
        whole = await llm.channel("predict", _predict_param(structured, **extra))
        capped = await llm.channel("predict", _predict_param(structured, **extra, **_cap(tokens)))
        cut = [m for m in messages(whole) if m["type"] == "fragment"][:tokens]
        assert [m for m in messages(capped) if m["type"] == "fragment"] == cut
        expected = "maxPredictedTokensReached"
        if len(cut) < tokens or (
            _stop_reason(whole) == "stopStringFound" and len(messages(whole)) - 1 <= tokens
        ):
            expected = _stop_reason(whole)
        assert _stop_reason(capped) == expected


BAD_SETTINGS = [
    ({"type": "json", "jsonSchema": {"type": "object", "required": 5}}, "required"),
    (
        {
            "type": "json",
            "jsonSchema": {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
        },
        "cycle",
    ),
    (
        {
            "type": "json",
            "jsonSchema": {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
        },
        "cycle",
    ),
    ({"type": "json", "jsonSchema": {"$ref": "#", "anyOf": [{"$ref": "#"}]}}, "cycle"),
    (
        {"type": "json", "jsonSchema": {"properties": [], "allOf": [{"properties": {"a": {}}}]}},
        "properties",
    ),
    (
        {"type": "gbnf", "gbnfGrammar": "root ::= " + "(" * 3000 + '"a"' + ")" * 3000},
        "nested too deeply",
    ),
    ({"type": "gbnf", "gbnfGrammar": 'root ::= "a"' + "{1}" * 3000}, "nests too deeply"),
    ({"type": "gbnf", "gbnfGrammar": "root ::= [a-"}, "unexpected end"),
    ({"type": "gbnf", "gbnfGrammar": 'root ::= "\\UFFFFFFFF"'}, "U+10FFFF"),
    ({"type": "gbnf", "gbnfGrammar": "root ::= []"}, "excludes every character"),
    ({"type": "gbnf", "gbnfGrammar": 'root ::= "a"\n' + "# filler\n" * 10_000}, "longer than"),
]


@pytest.mark.parametrize(("structured", "reason"), BAD_SETTINGS)
async def test_bad_structured_settings_give_typed_errors(
    server: StandInServer,
    client: RawClient,
    caplog: pytest.LogCaptureFixture,
    structured: dict[str, Any],
    reason: str,
) -> None:
    server.preload(LLAMA)
    llm = await client.connect("llm")
    frames = await llm.channel("predict", _predict_param(structured))
    error = frames[-1]["error"]
    if structured["type"] == "gbnf":
        assert error["title"].startswith("Invalid GBNF grammar: "), error
        assert reason in error["title"]
    else:
        assert (
            error["title"] == 'Invalid value for prediction config key "llm.prediction.structured"'
        )
        assert reason in error["cause"]
    assert "Internal" not in json.dumps(error)
    _no_errors_logged(caplog)


@pytest.mark.parametrize("stream", [False, True])
async def test_http_bad_or_huge_schemas_are_400_or_capped(
    server: StandInServer, stream: bool
) -> None:
    server.preload(LLAMA)

    def body(schema: Any, **extra: Any) -> dict[str, Any]:
        return {
            "model": LLAMA,
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
            "stream": stream,
            **extra,
        }

    for schema in ({"type": "object", "required": 5}, NESTED):
        status, reply = await call(server.url, "POST", "/v1/chat/completions", body(schema))
        assert status == 400, reply
        assert reply["error"]["code"] == "invalid_value"
    status, reply = await call(
        server.url, "POST", "/v1/chat/completions", body(NESTED, max_tokens=5)
    )
    assert status == 200, reply
    if not stream:
        assert reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["completion_tokens"] == 5


async def test_a_schema_within_the_bounds_is_followed_in_full(server: StandInServer) -> None:
    """minItems / minLength / minProperties up to the documented bounds are honoured (they
    were clamped to 1000 items and 10 000 characters: a 200 with an invalid document)."""
    server.preload(LLAMA)
    server.tokens_per_second = 200_000  # long documents, quickly
    item = {"type": "integer", "minimum": 0, "maximum": 9}
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"type": "array", "items": item, "minItems": 5000}, lambda v: len(v) == 5000),
        (
            {"type": "object", "properties": {"s": {"type": "string", "minLength": 20_000}}},
            lambda v: len(v["s"]) == 20_000,
        ),
        (
            {"type": "object", "minProperties": 2000, "additionalProperties": item},
            lambda v: len(v) == 2000,
        ),
    ]
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key="lm-studio", max_retries=0, timeout=20
    ) as api:
        for schema, check in cases:
            reply = await api.chat.completions.create(
                model=LLAMA,
                messages=[{"role": "user", "content": "go"}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": schema},
                },
            )
            assert reply.choices[0].finish_reason == "stop"
            content = reply.choices[0].message.content
            assert content is not None
            assert check(json.loads(content)), schema


async def test_a_schema_beyond_the_bounds_or_unsatisfiable_is_refused(
    server: StandInServer,
) -> None:
    server.preload(LLAMA)
    refused = [
        ({"type": "string", "minLength": 200_000}, "characters"),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 30_000}, "steps"),
        ({"type": "array", "minItems": 5, "maxItems": 2}, "maxItems"),
        ({"type": "string", "minLength": 9, "maxLength": 3}, "maxLength"),
        (
            {"type": "array", "items": {"enum": [1, 2]}, "minItems": 3, "uniqueItems": True},
            "distinct",
        ),
    ]
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key="lm-studio", max_retries=0, timeout=20
    ) as api:
        for schema, reason in refused:
            fmt: Any = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
            messages_ = [{"role": "user", "content": "go"}]
            with pytest.raises(openai.BadRequestError) as caught:
                await api.chat.completions.create(
                    model=LLAMA,
                    messages=messages_,
                    response_format=fmt,  # type: ignore[arg-type]
                )
            assert reason in caught.value.message, schema
        # with a token cap that ends the answer first, a huge string is no error
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": refused[0][0]}}
        reply = await api.chat.completions.create(
            model=LLAMA,
            messages=[{"role": "user", "content": "go"}],
            response_format=fmt,
            max_tokens=5,
        )
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None
        assert reply.usage.completion_tokens == 5
