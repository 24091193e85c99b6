"""Model-management endpoints: listing, loading, identifiers, queries, info, config, errors."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from lmstudio_async.testing import StandInServer, default_catalog

from ._wire import RawClient, Socket, load_param, messages, stack, types

LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
SMOL = "smollm2-135m-instruct"

JS_HEAD_MODEL_FIELDS = {
    "type",
    "modelKey",
    "format",
    "displayName",
    "publisher",
    "path",
    "sizeBytes",
    "indexedModelIdentifier",
    "deviceIdentifier",
    "paramsString",
    "architecture",
    "quantization",
    "maxContextLength",
}
INSTANCE_FIELDS = {"identifier", "instanceReference", "ttlMs", "lastUsedTime", "contextLength"}


def query(identifier: str | None = None, **extra: Any) -> dict[str, Any]:
    q: dict[str, Any] = dict(extra)
    if identifier is not None:
        q["identifier"] = identifier
    return {"type": "query", "query": q}


async def load(sock: Socket, model: str, **extra: Any) -> list[dict[str, Any]]:
    return await sock.channel("loadModel", load_param(model, **extra))


async def test_list_downloaded(client: RawClient) -> None:
    sock = await client.connect("system")
    models = await sock.result("listDownloadedModels")
    assert [m["modelKey"] for m in models] == [m["modelKey"] for m in default_catalog()]
    for m in models:
        assert set(m) >= JS_HEAD_MODEL_FIELDS
        assert m["format"] == "gguf"
        assert m["deviceIdentifier"] is None
        assert m["indexedModelIdentifier"] == m["path"]
        if m["type"] == "llm":
            assert {"vision", "trainedForToolUse"} <= set(m)
    by_key = {m["modelKey"]: m for m in models}
    assert by_key["mobilevlm_v2-1.7b"]["vision"] is True
    assert by_key["qwen2.5-7b-instruct-1m"]["trainedForToolUse"] is True
    assert by_key[NOMIC]["type"] == "embedding"
    await sock.ws.close()


async def test_system_misc(client: RawClient) -> None:
    sock = await client.connect("system")
    version = await sock.result("version")
    assert isinstance(version["version"], str)
    assert isinstance(version["build"], int)
    info = await sock.result("info")
    assert set(info) == {"pid", "isDaemon", "version"}
    assert await sock.result("getExperimentFlags") == []
    alive = await sock.open_channel("alive")
    await sock.barrier()  # nothing is sent on the alive channel
    assert alive
    variants = await sock.result("listDownloadedModelVariants", {"modelKey": LLAMA})
    assert [v["modelKey"] for v in variants] == [LLAMA]
    await sock.ws.close()


async def test_load_model_sequence(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    frames = await load(sock, LLAMA)
    kinds = types(frames)
    assert kinds[0] == "resolved"
    assert kinds[-2:] == ["success", "channelClose"]
    progress = [m["progress"] for m in messages(frames) if m["type"] == "progress"]
    assert 15 <= len(progress) <= 25
    assert all(a < b for a, b in itertools.pairwise(progress))
    assert progress[-1] == 1.0
    resolved, success = messages(frames)[0], messages(frames)[-1]
    assert resolved["info"]["modelKey"] == LLAMA
    info = success["info"]
    assert set(info) >= JS_HEAD_MODEL_FIELDS | INSTANCE_FIELDS
    assert info["identifier"] == LLAMA
    assert info["ttlMs"] is None
    assert isinstance(info["lastUsedTime"], int)
    assert info["contextLength"] == 4096
    assert server.open_channel_count() == 0
    [inst] = server.loaded_instances()
    assert inst.identifier == LLAMA
    assert not inst.jit
    assert inst.ttl_ms is None
    assert await sock.result("listLoaded") == [info]
    await sock.ws.close()


@pytest.mark.lmstudio_server(load_seconds=0)
async def test_zero_load_time_still_reports_progress(client: RawClient) -> None:
    sock = await client.connect("llm")
    frames = await load(sock, SMOL)
    progress = [m["progress"] for m in messages(frames) if m["type"] == "progress"]
    assert len(progress) == 20
    assert progress[-1] == 1.0
    await sock.ws.close()


async def test_automatic_identifiers(client: RawClient) -> None:
    sock = await client.connect("llm")
    ids = []
    for _ in range(3):
        frames = await load(sock, "hugging-quants/llama-3.2-1b-instruct")
        ids.append(messages(frames)[-1]["info"]["identifier"])
    assert ids == [LLAMA, f"{LLAMA}:2", f"{LLAMA}:3"]
    await sock.result("unloadModel", {"identifier": f"{LLAMA}:2"})
    frames = await load(sock, LLAMA)
    assert messages(frames)[-1]["info"]["identifier"] == f"{LLAMA}:2"
    refs = {i["instanceReference"] for i in await sock.result("listLoaded")}
    assert len(refs) == 3
    await sock.ws.close()


async def test_custom_and_duplicate_identifier(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    frames = await load(sock, LLAMA, identifier="mine")
    assert messages(frames)[-1]["info"]["identifier"] == "mine"
    frames = await load(sock, SMOL, identifier="mine")
    assert types(frames) == ["channelError"]  # before "resolved"
    error = frames[0]["error"]
    assert error["title"] == 'An instance with identifier "mine" already exists'
    assert error["rootTitle"] == error["title"]
    # uniqueness is global: the embedding namespace cannot reuse it either
    emb = await client.connect("embedding")
    frames = await load(emb, NOMIC, identifier="mine")
    assert "already exists" in frames[-1]["error"]["title"]
    assert [i.identifier for i in server.loaded_instances()] == ["mine"]
    await sock.ws.close()
    await emb.ws.close()


@pytest.mark.parametrize("identifier", ["tab\there", "x" * 1100, ""])
async def test_any_string_is_an_identifier(
    server: StandInServer, client: RawClient, identifier: str
) -> None:
    # loadModel.identifier is z.string().optional() and getOrLoad.identifier z.string()
    # (baseModelBackendInterface.ts): no reasonableKeyString there, so LM Studio answers.
    sock = await client.connect("llm")
    frames = await load(sock, SMOL, identifier=identifier)
    assert types(frames)[-2:] == ["success", "channelClose"], frames
    assert messages(frames)[-1]["info"]["identifier"] == identifier
    assert [i.identifier for i in server.loaded_instances()] == [identifier]
    # getOrLoad finds it by its identifier
    frames = await sock.channel("getOrLoad", {"identifier": identifier, "loadConfigStack": stack()})
    assert types(frames) == ["alreadyLoaded", "channelClose"]
    # a getOrLoad identifier naming nothing is a model not found, not a warning
    for unknown in [u for u in ("tab\tthere", "y" * 1100, "") if u != identifier]:
        param = {"identifier": unknown, "loadConfigStack": stack()}
        frames = await sock.channel("getOrLoad", param)
        assert types(frames) == ["channelError"], frames
        assert frames[0]["error"]["displayData"]["code"] == "generic.pathNotFound"
        assert frames[0]["error"]["displayData"]["path"] == unknown
    await sock.barrier()
    await sock.ws.close()


async def test_an_empty_model_key_matches_no_model(client: RawClient) -> None:
    # (every path starts with "", but an empty key is no prefix of anything)
    sock = await client.connect("llm")
    frames = await load(sock, "")
    assert types(frames) == ["channelError"]
    assert frames[0]["error"]["displayData"]["code"] == "generic.pathNotFound"
    await sock.ws.close()


async def test_queries(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    await load(sock, LLAMA, identifier="first")
    await load(sock, SMOL)

    async def ident(q: dict[str, Any]) -> str:
        info = await sock.result("getModelInfo", {"specifier": q, "throwIfNotFound": True})
        return str(info["identifier"])

    assert await ident(query("first")) == "first"
    assert await ident(query("FIRST")) == "first"
    assert await ident(query(LLAMA)) == "first"  # model key
    assert await ident(query("hugging-quants/llama-3.2-1b-instruct")) == "first"  # path prefix
    assert await ident(query()) == "first"  # empty query: first loaded
    assert await ident(query(path="lmstudio-community/smollm2")) == SMOL
    assert await ident(query(SMOL, domain="llm")) == SMOL
    ref = server.loaded_instances()[1].instance_reference
    assert await ident({"type": "instanceReference", "instanceReference": ref}) == SMOL
    await sock.ws.close()


async def test_get_or_load(server: StandInServer, client: RawClient) -> None:
    sock = await client.connect("llm")
    frames = await sock.channel(
        "getOrLoad", {"identifier": SMOL, "loadTtlMs": 60_000, "loadConfigStack": stack()}
    )
    kinds = types(frames)
    assert kinds[0] == "startLoading"
    assert kinds[-2:] == ["loadSuccess", "channelClose"]
    assert "loadProgress" in kinds
    start = messages(frames)[0]
    assert start["identifier"] == SMOL
    assert start["info"]["modelKey"] == SMOL
    info = messages(frames)[-1]["info"]
    assert info["ttlMs"] == 60_000
    [inst] = server.loaded_instances()
    assert inst.jit
    # second time: alreadyLoaded, TTL unchanged even if a different one is requested
    frames = await sock.channel(
        "getOrLoad", {"identifier": SMOL.upper(), "loadTtlMs": 5, "loadConfigStack": stack()}
    )
    assert types(frames) == ["alreadyLoaded", "channelClose"]
    assert messages(frames)[0]["info"]["instanceReference"] == info["instanceReference"]
    assert messages(frames)[0]["info"]["ttlMs"] == 60_000
    await sock.ws.close()


async def test_get_model_info_not_found(client: RawClient) -> None:
    sock = await client.connect("llm")
    await load(sock, SMOL)
    reply = await sock.rpc("getModelInfo", {"specifier": query("nope"), "throwIfNotFound": True})
    assert reply["type"] == "rpcError"
    err = reply["error"]
    assert err["title"] == err["rootTitle"]
    assert err["displayData"] == {
        "code": "generic.noModelMatchingQuery",
        "query": {"identifier": "nope"},
        "loadedModelsSample": [SMOL],
        "totalLoadedModels": 1,
    }
    stale = {"type": "instanceReference", "instanceReference": "no-such-ref"}
    reply = await sock.rpc("getModelInfo", {"specifier": stale, "throwIfNotFound": True})
    assert reply["error"]["displayData"] == {"code": "generic.specificModelUnloaded"}
    reply = await sock.rpc("getModelInfo", {"specifier": stale, "throwIfNotFound": False})
    assert "result" not in reply
    await sock.ws.close()


@pytest.mark.parametrize("throw", [True, False])
async def test_processing_state_of_a_missing_instance_is_an_error(
    client: RawClient, throw: bool
) -> None:
    # Its result is a ModelProcessingState, never optional (baseModelBackendInterface.ts):
    # unlike getModelInfo there is no empty result for throwIfNotFound false.
    sock = await client.connect("llm")
    await load(sock, SMOL)
    param = {"specifier": query(SMOL), "throwIfNotFound": throw}
    assert await sock.result("getInstanceProcessingState", param) == {
        "status": "idle",
        "queued": 0,
    }
    for specifier in (query("nope"), {"type": "instanceReference", "instanceReference": "x"}):
        param = {"specifier": specifier, "throwIfNotFound": throw}
        reply = await sock.rpc("getInstanceProcessingState", param)
        assert reply["type"] == "rpcError", reply
        assert reply["error"]["displayData"]["code"] in (
            "generic.noModelMatchingQuery",
            "generic.specificModelUnloaded",
        )
    await sock.ws.close()


async def test_namespaces_only_see_their_domain(client: RawClient) -> None:
    llm = await client.connect("llm")
    emb = await client.connect("embedding")
    await load(llm, SMOL)
    frames = await load(emb, NOMIC)
    assert messages(frames)[-1]["info"]["type"] == "embedding"
    assert messages(frames)[-1]["info"]["contextLength"] == 2048
    assert [i["identifier"] for i in await llm.result("listLoaded")] == [SMOL]
    assert [i["identifier"] for i in await emb.result("listLoaded")] == [NOMIC]
    reply = await llm.rpc("getModelInfo", {"specifier": query(NOMIC), "throwIfNotFound": True})
    assert reply["type"] == "rpcError"
    await llm.ws.close()
    await emb.ws.close()


async def test_unload_unknown(client: RawClient) -> None:
    sock = await client.connect("llm")
    reply = await sock.rpc("unloadModel", {"identifier": "No such model"})
    assert reply["type"] == "rpcError"
    assert reply["error"]["displayData"] == {
        "code": "generic.noModelMatchingQuery",
        "query": {"identifier": "No such model"},
        "loadedModelsSample": [],
        "totalLoadedModels": 0,
    }
    await sock.ws.close()


async def test_load_unknown_model(client: RawClient) -> None:
    sock = await client.connect("llm")
    frames = await load(sock, "no-such/model")
    assert types(frames) == ["channelError"]
    display = frames[0]["error"]["displayData"]
    assert display["code"] == "generic.pathNotFound"
    assert display["path"] == "no-such/model"
    assert display["totalModels"] == 5
    assert LLAMA in display["availablePathsSample"]
    await sock.ws.close()


async def test_domain_mismatch(client: RawClient) -> None:
    llm = await client.connect("llm")
    frames = await load(llm, NOMIC)
    assert frames[-1]["error"]["displayData"] == {
        "code": "generic.domainMismatch",
        "path": NOMIC,
        "actualDomain": "embedding",
        "expectedDomain": "llm",
    }
    emb = await client.connect("embedding")
    frames = await emb.channel("getOrLoad", {"identifier": LLAMA, "loadConfigStack": stack()})
    assert frames[-1]["error"]["displayData"]["code"] == "generic.domainMismatch"
    await llm.ws.close()
    await emb.ws.close()


async def test_load_config_round_trip(client: RawClient) -> None:
    sock = await client.connect("llm")
    config = {
        "llm.load.contextLength": 8192,
        "llm.load.llama.acceleration.offloadRatio": 0.5,
        "llm.load.seed": {"checked": True, "value": 42},
        "llm.load.llama.flashAttention": True,
        "llm.load.llama.kCacheQuantizationType": {"checked": True, "value": "q8_0"},
        "some.unknown.key": "ignored",
    }
    frames = await load(sock, LLAMA, config=config)
    info = messages(frames)[-1]["info"]
    assert info["contextLength"] == 8192
    kv = await sock.result("getLoadConfig", {"specifier": query(info["identifier"])})
    values = {f["key"]: f["value"] for f in kv["fields"]}
    for key, value in config.items():
        if key != "some.unknown.key":
            assert values[key] == value
    assert "some.unknown.key" not in values
    assert values["llm.load.llama.tryMmap"] is True
    assert values["load.gpuSplitConfig"]["strategy"] == "evenly"
    # the key set is the same for every LLM instance
    frames = await load(sock, SMOL)
    kv2 = await sock.result("getLoadConfig", {"specifier": query(SMOL)})
    assert [f["key"] for f in kv2["fields"]] == [f["key"] for f in kv["fields"]]
    assert {f["key"]: f["value"] for f in kv2["fields"]}["llm.load.contextLength"] == 4096
    await sock.ws.close()


async def test_layers_collapse_later_wins(client: RawClient) -> None:
    sock = await client.connect("llm")
    creation = {
        "modelKey": SMOL,
        "loadConfigStack": {
            "layers": [
                {
                    "layerName": "preset",
                    "config": {"fields": [{"key": "llm.load.contextLength", "value": 1024}]},
                },
                {
                    "layerName": "apiOverride",
                    "config": {
                        "fields": [
                            {"key": "llm.load.contextLength", "value": 2000},
                            {"key": "llm.load.contextLength", "value": 3000},
                        ]
                    },
                },
            ]
        },
    }
    frames = await sock.channel("loadModel", creation)
    assert messages(frames)[-1]["info"]["contextLength"] == 3000
    await sock.ws.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("llm.load.contextLength", 0),
        ("llm.load.contextLength", "big"),
        ("llm.load.llama.acceleration.offloadRatio", 1.5),
        ("llm.load.llama.acceleration.offloadRatio", "half"),
        ("llm.load.seed", 42),
        ("llm.load.llama.flashAttention", "yes"),
        ("llm.load.llama.kCacheQuantizationType", {"checked": True, "value": "q9"}),
        # 0 is not false (nor 1 true), as in JavaScript
        ("llm.load.llama.kCacheQuantizationType", {"checked": True, "value": 0}),
        (
            "llm.load.mlx.kvCacheQuantization",
            {"enabled": True, "bits": True, "groupSize": 64, "quantizedStart": 0},
        ),
        ("load.gpuSplitConfig", {"strategy": "evenly"}),
    ],
)
async def test_invalid_config_value(
    server: StandInServer, client: RawClient, key: str, value: Any
) -> None:
    sock = await client.connect("llm")
    frames = await load(sock, SMOL, config={key: value})
    assert frames[-1]["type"] == "channelError"
    assert key in frames[-1]["error"]["title"]
    assert server.loaded_instances() == []
    await sock.ws.close()


async def test_context_length_above_max(client: RawClient) -> None:
    sock = await client.connect("llm")
    frames = await load(sock, SMOL, config={"llm.load.contextLength": 8193})
    error = frames[-1]["error"]
    assert "exceeds" in error["title"]
    assert "8192" in error["title"]
    await sock.ws.close()


async def test_tokenize_and_count(client: RawClient) -> None:
    sock = await client.connect("llm")
    await load(sock, SMOL)
    spec = query(SMOL)
    tokens = await sock.result("tokenize", {"specifier": spec, "inputString": "Hello, world!"})
    count = await sock.result("countTokens", {"specifier": spec, "inputString": "Hello, world!"})
    assert count["tokenCount"] == len(tokens["tokens"]) == 4
    emb = await client.connect("embedding")
    await load(emb, NOMIC)
    vec = await emb.result("embedString", {"modelSpecifier": query(NOMIC), "inputString": "hi"})
    assert len(vec["embedding"]) == 768
    await sock.ws.close()
    await emb.ws.close()


async def test_device_identifier(client: RawClient) -> None:
    sock = await client.connect("llm")
    frames = await load(sock, SMOL, deviceIdentifier=None)
    assert frames[-1]["type"] == "channelClose"
    reply = await sock.rpc("unloadModel", {"identifier": SMOL, "deviceIdentifier": "remote-box"})
    assert reply["type"] == "rpcError"
    assert "remote-box" in reply["error"]["title"]
    reply = await sock.rpc("unloadModel", {"identifier": SMOL, "deviceIdentifier": None})
    assert reply["type"] == "rpcResult"
    await sock.ws.close()
