"""AsyncClient model management against the stand-in, over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from ._support import LLAMA, NOMIC, QWEN, SMOL, eventually, loaded_ids

# --- model() ---------------------------------------------------------------------------


async def test_model_without_key_and_nothing_loaded(client: lms.AsyncClient) -> None:
    with pytest.raises(lms.ModelNotFoundError, match="No LLM is loaded"):
        await client.llm.model()
    with pytest.raises(lms.ModelNotFoundError, match="No embedding model is loaded"):
        await client.embedding.model()


async def test_model_without_key_returns_a_loaded_one(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload(SMOL)
    lmstudio_server.preload(NOMIC)
    llm = await client.llm.model()
    assert isinstance(llm, lms.LLM)
    assert llm.identifier == SMOL
    emb = await client.embedding.model()
    assert isinstance(emb, lms.EmbeddingModel)
    assert emb.model_key == NOMIC


async def test_model_key_loads_with_progress_then_reuses(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    seen: list[float] = []
    llm = await client.llm.model(LLAMA, on_progress=seen.append)
    assert llm.identifier == LLAMA
    assert llm.model_key == LLAMA
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert all(0.0 <= p <= 1.0 for p in seen)
    assert len(seen) >= 10
    # already loaded: same instance, no new load, no progress
    again: list[float] = []
    same = await client.llm.model(LLAMA, on_progress=again.append)
    assert same == llm
    assert again in ([], [1.0])
    assert loaded_ids(lmstudio_server) == [LLAMA]


async def test_model_matches_path_prefix_case_insensitively(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload(LLAMA, identifier="custom")
    llm = await client.llm.model("hugging-quants/llama-3.2-1b-instruct")
    assert llm.identifier == "custom"
    assert loaded_ids(lmstudio_server) == ["custom"]


async def test_coroutine_progress_callback(client: lms.AsyncClient) -> None:
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        await asyncio.sleep(0)
        seen.append(fraction)

    await client.llm.load(SMOL, on_progress=on_progress)
    assert seen[-1] == 1.0
    assert seen == sorted(seen)


async def test_model_warns_when_loaded_config_differs(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload(LLAMA, config={"llm.load.contextLength": 2048})
    with pytest.warns(lms.ConfigMismatchWarning, match="context_length"):
        llm = await client.llm.model(LLAMA, config=lms.LlmLoadConfig(context_length=4096))
    assert await llm.get_context_length() == 2048
    # the same config as loaded: no warning (warnings are errors in this suite)
    await client.llm.model(LLAMA, config={"context_length": 2048})


async def test_a_config_mismatch_warning_names_the_callers_line(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload(LLAMA, config={"llm.load.contextLength": 2048})
    with pytest.warns(lms.ConfigMismatchWarning) as record:
        await client.llm.model(LLAMA, config={"context_length": 4096})
    assert [w.filename for w in record] == [__file__]


async def test_model_raise_or_reload_on_config_mismatch(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload(LLAMA, config={"llm.load.contextLength": 2048})
    with pytest.raises(lms.ConfigMismatchError) as info:
        await client.llm.model(LLAMA, config={"context_length": 4096}, on_config_mismatch="raise")
    assert info.value.differences == {"context_length": (4096, 2048)}
    llm = await client.llm.model(
        LLAMA, config={"context_length": 4096}, on_config_mismatch="reload"
    )
    assert await llm.get_context_length() == 4096
    assert len(lmstudio_server.loaded_instances()) == 1


async def test_reload_of_an_instance_named_by_its_identifier(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # The key names the instance, not a model: once unloaded it would name nothing, so the
    # reload loads the instance's model again, under its identifier.
    await client.llm.load(LLAMA, "writer", config={"context_length": 2048})
    await client.llm.load(LLAMA, "other")
    llm = await client.llm.model(
        "writer", config={"context_length": 4096}, on_config_mismatch="reload"
    )
    assert (llm.identifier, llm.model_key) == ("writer", LLAMA)
    assert await llm.get_context_length() == 4096
    assert sorted(loaded_ids(lmstudio_server)) == ["other", "writer"]
    # Two callers at once that disagree: the second reloads after the first (last wins).
    _, second = await asyncio.gather(
        client.llm.model("writer", config={"context_length": 2048}, on_config_mismatch="reload"),
        client.llm.model("writer", config={"context_length": 8192}, on_config_mismatch="reload"),
    )
    assert await second.get_context_length() == 8192
    assert sorted(loaded_ids(lmstudio_server)) == ["other", "writer"]


# --- load() ------------------------------------------------------------------------------


async def test_load_custom_and_automatic_identifiers(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    first = await client.llm.load(LLAMA)
    second = await client.llm.load(LLAMA)
    named = await client.llm.load(LLAMA, "my-llama")
    assert first.identifier == LLAMA
    assert second.identifier == f"{LLAMA}:2"
    assert named.identifier == "my-llama"
    assert {h.model_key for h in (first, second, named)} == {LLAMA}
    assert loaded_ids(lmstudio_server) == [LLAMA, f"{LLAMA}:2", "my-llama"]


async def test_duplicate_identifier_is_a_server_error_naming_it(client: lms.AsyncClient) -> None:
    await client.llm.load(LLAMA, "taken")
    with pytest.raises(lms.ServerError, match='"taken" already exists') as info:
        await client.llm.load(SMOL, "taken")
    assert not isinstance(info.value, lms.ModelNotFoundError)


async def test_load_unknown_model(client: lms.AsyncClient) -> None:
    with pytest.raises(lms.ModelNotFoundError, match="no-such-model"):
        await client.llm.load("no-such-model")
    with pytest.raises(lms.ModelNotFoundError, match="no-such-model"):
        await client.llm.model("no-such-model")


async def test_load_config_typed_and_dict_round_trip(client: lms.AsyncClient) -> None:
    llm = await client.llm.load(
        LLAMA, config=lms.LlmLoadConfig(context_length=4096, gpu_offload=0.5, seed=42)
    )
    cfg = await llm.get_load_config()
    assert isinstance(cfg, lms.LlmLoadConfig)
    assert (cfg.context_length, cfg.gpu_offload, cfg.seed) == (4096, 0.5, 42)
    assert await llm.get_context_length() == 4096
    emb = await client.embedding.load(NOMIC, config={"context_length": 1024})
    ecfg = await emb.get_load_config()
    assert isinstance(ecfg, lms.EmbeddingLoadConfig)
    assert ecfg.context_length == 1024


async def test_bad_config_fails_before_anything_is_sent(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    with pytest.raises(lms.ConfigError, match="context_lenght"):
        await client.llm.load(LLAMA, config={"context_lenght": 4096})
    with pytest.raises(lms.ConfigError, match="gpu_offload"):
        await client.llm.load(LLAMA, config={"gpu_offload": 2})
    with pytest.raises(lms.ConfigError):
        await client.llm.load(LLAMA, config=lms.EmbeddingLoadConfig(context_length=10))  # type: ignore[arg-type]
    assert lmstudio_server.received_frames() == []


_LOAD_ERRORS = [
    ({"key": ""}, "must not be empty"),
    ({"key": 3}, "must be a string"),
    ({"key": "a\x00b"}, "control character"),
    ({"key": LLAMA, "identifier": ""}, "identifier must not be empty"),
    ({"key": "   "}, r"^key must not be empty or only whitespace, got '   '$"),
    ({"key": LLAMA, "identifier": " \n "}, r"^identifier must not be empty or only whitespace"),
    ({"key": LLAMA, "device": "  "}, r"^device must not be empty or only whitespace"),
    ({"key": LLAMA, "ttl": -1}, "ttl must be a positive"),
    ({"key": LLAMA, "ttl": 0}, "ttl must be a positive"),
    ({"key": LLAMA, "ttl": 0.0001}, r"ttl must be at least 0\.001 s"),
    ({"key": LLAMA, "ttl": 0.00049}, r"ttl must be at least 0\.001 s"),
    ({"key": LLAMA, "ttl": "10"}, "ttl must be a number"),
    ({"key": LLAMA, "on_progress": 5}, "on_progress must be a function"),
]
_MODEL_ERRORS = [
    ({"ttl": 60}, "without a key returns an already loaded model"),
    ({"config": {"context_length": 4096}}, "ttl, config and on_progress need a key"),
    ({"on_progress": print}, "need a key"),
    ({"key": LLAMA, "on_config_mismatch": "ignore"}, "on_config_mismatch must be 'warn'"),
    ({"key": "", "on_config_mismatch": "warn"}, "must not be empty"),
    ({"key": "   "}, r"^key must not be empty or only whitespace, got '   '$"),
]


@pytest.mark.parametrize(
    ("method", "kwargs", "match"),
    [("load", *case) for case in _LOAD_ERRORS] + [("model", *case) for case in _MODEL_ERRORS],
)
async def test_bad_arguments_fail_before_anything_is_sent(
    client: lms.AsyncClient,
    lmstudio_server: ThreadedStandInServer,
    method: str,
    kwargs: dict[str, Any],
    match: str,
) -> None:
    with pytest.raises(lms.LMStudioValueError, match=match):
        await getattr(client.llm, method)(**kwargs)
    assert lmstudio_server.received_frames() == []


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "match"),
    [
        ("unload", ("   ",), {}, r"^identifier must not be empty or only whitespace"),
        ("unload", ("a",), {"device": "\t"}, r"^device must not be empty or only whitespace"),
        ("estimate", (" ",), {}, r"^key must not be empty or only whitespace"),
        ("estimate", ("\u200b",), {}, r"^key must not be empty or only whitespace"),
        ("unload", ("\u3000",), {}, r"^identifier must not be empty or only whitespace"),
        ("estimate", (LLAMA,), {"device": " "}, r"^device must not be empty or only whitespace"),
    ],
)
async def test_blank_keys_and_identifiers_fail_before_anything_is_sent(
    client: lms.AsyncClient,
    lmstudio_server: ThreadedStandInServer,
    method: str,
    args: tuple[str, ...],
    kwargs: dict[str, Any],
    match: str,
) -> None:
    with pytest.raises(lms.LMStudioValueError, match=match):
        await getattr(client.llm, method)(*args, **kwargs)
    with pytest.raises(lms.LMStudioValueError, match=match):
        await getattr(client.embedding, method)(*args, **kwargs)
    assert lmstudio_server.received_frames() == []


async def test_inner_spaces_in_an_identifier_are_fine(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    model = await client.llm.load(SMOL, "my small model")
    assert loaded_ids(lmstudio_server) == ["my small model"]
    assert await client.llm.model("my small model") == model
    await client.llm.unload("my small model")
    assert loaded_ids(lmstudio_server) == []


# --- unload / list / info -------------------------------------------------------------


async def test_unload_by_handle_and_by_identifier(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    a = await client.llm.load(LLAMA, "a")
    await client.llm.load(LLAMA, "b")
    await a.unload()
    assert loaded_ids(lmstudio_server) == ["b"]
    await client.llm.unload("b")
    assert loaded_ids(lmstudio_server) == []
    with pytest.raises(lms.ModelNotFoundError, match="'b'"):
        await client.llm.unload("b")
    with pytest.raises(lms.ModelNotFoundError, match="'a'"):
        await a.get_info()


@pytest.mark.lmstudio_server(devices={"gpu-box": 8})
@pytest.mark.parametrize("theirs_on", [None, "gpu-box"])
async def test_a_stale_handle_never_unloads_a_newer_instance_with_its_identifier(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, theirs_on: str | None
) -> None:
    # Someone else unloads our instance and loads another under the same identifier
    # (here or on an LM Link device): our old handle's unload(), and the exit of a
    # loaded() block, raise or pass quietly, and leave theirs loaded.
    def instances() -> list[tuple[str, str | None]]:
        return sorted((i.identifier, i.device) for i in lmstudio_server.loaded_instances())

    old = await client.llm.load(SMOL, "worker")
    async with lms.AsyncClient(lmstudio_server.host) as other:
        await other.llm.unload("worker")
        theirs = await other.llm.load(LLAMA, "worker", device=theirs_on)
        with pytest.raises(lms.ModelNotFoundError, match="Unload of 'worker' failed"):
            await old.unload()
        async with client.llm.loaded(SMOL, "scoped"):
            await other.llm.unload("scoped")
            await other.llm.load(LLAMA, "scoped", device=theirs_on)
        assert instances() == [("scoped", theirs_on), ("worker", theirs_on)]
        assert (await theirs.get_info()).model_key == LLAMA
        await theirs.unload()  # its own handle still unloads it
        assert [i for i, _ in instances()] == ["scoped"]


async def test_lists(client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer) -> None:
    lmstudio_server.preload(SMOL)
    lmstudio_server.preload(NOMIC)
    everything = await client.system.list_downloaded()
    assert {m.model_key for m in everything} >= {LLAMA, SMOL, QWEN, NOMIC}
    llms = await client.llm.list_downloaded()
    assert all(isinstance(m, lms.LlmInfo) for m in llms)
    assert NOMIC not in {m.model_key for m in llms}
    embs = await client.embedding.list_downloaded()
    assert [m.model_key for m in embs] == [NOMIC]
    assert [h.identifier for h in await client.llm.list_loaded()] == [SMOL]
    assert [h.identifier for h in await client.embedding.list_loaded()] == [NOMIC]
    info = next(m for m in llms if m.model_key == LLAMA)
    assert info.size_bytes > 10**9
    assert info.max_context_length >= 8192
    assert info.type == "llm"


async def test_no_ttl_is_sent_unless_asked_for(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # The official Python SDK sends a one-hour TTL on every model(key) load; we send none.
    await client.llm.model(SMOL)
    await client.llm.load(LLAMA)
    await client.llm.model(QWEN, ttl=30)
    opened = lmstudio_server.received_messages(namespace="llm", type="channelCreate")
    sent = [(m["endpoint"], m["creationParameter"]) for m in opened]
    ttls = [(endpoint, c.get("loadTtlMs"), c.get("ttlMs")) for endpoint, c in sent]
    assert ttls == [
        ("getOrLoad", None, None),
        ("loadModel", None, None),
        ("getOrLoad", 30_000, None),
    ]


async def test_get_info_has_ttl_and_last_used(client: lms.AsyncClient) -> None:
    plain = await client.llm.load(SMOL)
    info = await plain.get_info()
    assert info.ttl is None  # no hidden default TTL
    assert info.identifier == SMOL
    timed = await client.llm.load(SMOL, ttl=90)
    tinfo = await timed.get_info()
    assert tinfo.ttl == 90.0
    assert tinfo.last_used is not None
    assert tinfo.context_length == await timed.get_context_length()


async def test_ttl_expiry(client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer) -> None:
    await client.llm.load(SMOL, ttl=5)
    keep = await client.llm.load(SMOL)
    lmstudio_server.advance_clock(6)
    assert [h.identifier for h in await client.llm.list_loaded()] == [keep.identifier]


async def test_context_length_max_loads_the_largest_the_model_supports(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    downloaded = {m.model_key: m for m in await client.system.list_downloaded()}
    most, emb_most = downloaded[LLAMA].max_context_length, downloaded[NOMIC].max_context_length
    llm = await client.llm.load(LLAMA, "worker", config=lms.LlmLoadConfig(context_length="max"))
    assert await llm.get_context_length() == most
    # The same again, by model key or by the instance's identifier: no mismatch.
    for key in (LLAMA, "worker", LLAMA.upper()):
        again = await client.llm.model(
            key, config={"context_length": "max"}, on_config_mismatch="raise"
        )
        assert again.identifier == "worker"
    with pytest.raises(lms.ConfigMismatchError) as info:
        await client.llm.model(LLAMA, config={"context_length": 2048}, on_config_mismatch="raise")
    assert info.value.differences == {"context_length": (2048, most)}
    explicit = await client.llm.estimate(LLAMA, config={"context_length": most})
    assert await client.llm.estimate(LLAMA, config={"context_length": "max"}) == explicit
    emb = await client.embedding.model(NOMIC, config={"context_length": "max"})
    assert (await emb.get_load_config()).context_length == emb_most
    with pytest.raises(lms.ModelNotFoundError, match=r"context_length='max'.*'no-such-model'"):
        await client.llm.load("no-such-model", config={"context_length": "max"})
    with pytest.raises(lms.ConfigError, match="int > 0 or 'max'"):
        await client.llm.load(LLAMA, config={"context_length": "maximum"})
    assert sorted(i.identifier for i in lmstudio_server.loaded_instances()) == [NOMIC, "worker"]


async def test_a_model_of_the_other_kind_is_a_domain_mismatch_on_every_path(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # An LLM's key given to `embedding` (or back) is one typed error, whoever finds it first:
    # the server (get-or-load, load) or the client (looking up context_length="max"). Never
    # a ModelNotFoundError: the model is downloaded.
    calls = {
        "Get-or-load": lambda cfg: client.embedding.model(LLAMA, config=cfg),
        "Model load": lambda cfg: client.embedding.load(LLAMA, config=cfg),
        "Estimate": lambda cfg: client.embedding.estimate(LLAMA, config=cfg),
    }
    for operation, call in calls.items():
        for cfg in (None, {"context_length": "max"}):
            if operation == "Estimate" and cfg is None:
                continue  # an estimate asks LM Studio about the files only
            with pytest.raises(lms.DomainMismatchError) as info:
                await call(cfg)
            err = info.value
            assert not isinstance(err, lms.ModelNotFoundError)
            assert isinstance(err, lms.LMStudioValueError)
            assert (err.actual_domain, err.expected_domain) == ("llm", "embedding"), cfg
            assert err.model is not None
            assert LLAMA in err.model
            assert str(err).startswith(f"{operation} failed: "), str(err)
    with pytest.raises(lms.DomainMismatchError, match="is an embedding model, not an LLM"):
        await client.llm.load(NOMIC, config={"context_length": "max"})
    # A prefix of several LLM keys names no one model: not a mismatch, and not a hint to
    # pick one of those LLMs for an embedding load.
    with pytest.raises(lms.ModelNotFoundError, match="no downloaded embedding model matches"):
        await client.embedding.load("lmstudio-community/", config={"context_length": "max"})
    assert lmstudio_server.loaded_instances() == []


async def test_not_loaded_names_the_kind_the_sample_covers(client: lms.AsyncClient) -> None:
    # LM Studio samples the loaded models of the namespace asked: with only an embedding
    # model loaded, an LLM unload of its identifier must not say that nothing is loaded.
    emb = await client.embedding.load(NOMIC)
    with pytest.raises(lms.ModelNotFoundError) as info:
        await client.llm.unload(emb.identifier)
    assert "no LLM is loaded" in str(info.value)
    assert info.value.domain == "llm"
    await emb.unload()


@pytest.mark.lmstudio_server(load_seconds=0.6)
@pytest.mark.parametrize("method", ["load", "model"])
async def test_context_length_max_looks_the_model_up_within_the_total_deadline(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, method: str
) -> None:
    # The lookup of "max" is one step of the call: it spends the same total deadline as the
    # load (a slow listing and a 0.6 s load cannot both fit in 0.9 s), and the error names
    # the total as given.
    from lmstudio_async.testing._connection import RpcEndpoint

    endpoints = lmstudio_server._rt.namespaces["system"].rpc
    listing = endpoints["listDownloadedModels"]

    def slow(conn: Any, param: Any) -> Any:
        time.sleep(0.5)  # (blocks the stand-in's thread: a server slow to answer)
        return listing.handler(conn, param)

    endpoints["listDownloadedModels"] = RpcEndpoint(listing.parameter, slow)
    call = getattr(client.llm, method)
    await client.llm.list_loaded()  # connected
    with pytest.raises(lms.LMStudioTimeoutError, match=r"total deadline \(0\.9 s\)") as info:
        await call(SMOL, config={"context_length": "max"}, timeout=lms.Timeouts(total=0.9))
    assert info.value.timeout == 0.9
    await eventually(lambda: lmstudio_server.loaded_instances() == [])


async def test_estimate(client: lms.AsyncClient) -> None:
    small = await client.llm.estimate(SMOL)
    big = await client.llm.estimate(QWEN, config={"context_length": 32768})
    assert small.fits
    assert 0 < small.memory.total_bytes < big.memory.total_bytes
    with pytest.raises(lms.ModelNotFoundError):
        await client.llm.estimate("no-such-model")


# --- scoped instances ---------------------------------------------------------------


async def test_loaded_context_manager_unloads_on_exit_and_error(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    async with client.llm.loaded(SMOL, "scoped") as model:
        assert loaded_ids(lmstudio_server) == ["scoped"]
        assert model.identifier == "scoped"
    assert loaded_ids(lmstudio_server) == []
    with pytest.raises(RuntimeError, match="boom"):
        async with client.llm.loaded(SMOL, "scoped"):
            raise RuntimeError("boom")
    assert loaded_ids(lmstudio_server) == []


async def test_loaded_context_manager_unloads_on_cancellation(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    entered = asyncio.Event()

    async def user() -> None:
        async with client.llm.loaded(SMOL, "scoped"):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(user())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loaded_ids(lmstudio_server) == []


# --- concurrency -------------------------------------------------------------------------


@pytest.mark.lmstudio_server(load_seconds=0.3)
async def test_single_flight(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    handles = await asyncio.gather(*(client.llm.model(LLAMA) for _ in range(20)))
    assert {h.identifier for h in handles} == {LLAMA}
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 1
    spellings = [LLAMA, LLAMA.upper(), LLAMA.title()]  # keys match case-insensitively
    await handles[0].unload()
    handles = await asyncio.gather(*(client.llm.model(k) for k in spellings * 3))
    assert {h.identifier for h in handles} == {LLAMA}
    assert loaded_ids(lmstudio_server) == [LLAMA]


@pytest.mark.lmstudio_server(load_seconds=0.3)
async def test_each_caller_of_a_shared_load_runs_its_own_callback(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # One load for three callers; a callback that raises fails only its own caller, and a
    # slow one delays only its own caller. Each gets every value, ending with 1.0.
    def broken(fraction: float) -> None:
        if fraction >= 0.5:
            raise RuntimeError("this caller's progress bar broke")

    fast: list[float] = []
    slow: list[float] = []

    async def slow_bar(fraction: float) -> None:
        await asyncio.sleep(0.1)
        slow.append(fraction)

    a = asyncio.create_task(client.llm.model(LLAMA, on_progress=broken))
    b = asyncio.create_task(client.llm.model(LLAMA, on_progress=fast.append, timeout=5))
    c = asyncio.create_task(client.llm.model(LLAMA, on_progress=slow_bar))
    with pytest.raises(RuntimeError, match="progress bar broke"):
        await a
    done, _ = await asyncio.wait({b, c}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {b}  # not held up by c's callback
    assert (await b).identifier == LLAMA
    assert (await c).identifier == LLAMA
    for seen in (fast, slow):
        assert len(seen) >= 10
        assert seen == sorted(seen)
        assert seen[-1] == 1.0
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 1


@pytest.mark.lmstudio_server(load_seconds=0.3)
async def test_the_last_caller_failing_after_the_load_keeps_what_the_others_got(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # B's slow callback keeps it waiting after A got the instance; B then fails (its
    # callback raises at 1.0): the instance is A's, and stays loaded.
    async def slow_then_broken(fraction: float) -> None:
        await asyncio.sleep(0.05)
        if fraction == 1.0:
            raise RuntimeError("B's progress bar broke at the end")

    a = asyncio.create_task(client.llm.model(LLAMA))
    b = asyncio.create_task(client.llm.model(LLAMA, on_progress=slow_then_broken))
    handle = await a
    assert not b.done()
    with pytest.raises(RuntimeError, match="broke at the end"):
        await b
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert (await handle.get_info()).identifier == LLAMA


async def test_a_caller_arriving_while_a_shared_load_is_cancelled_loads_afresh(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # The only caller gives up; a new one arrives before the cancel is acknowledged. It must
    # neither inherit the cancellation (a CancelledError nobody asked for) nor load key:2.
    lmstudio_server.load_seconds = 0.5
    first = asyncio.create_task(client.llm.model(LLAMA))
    await eventually(lambda: lmstudio_server.open_channel_count(endpoint="getOrLoad") == 1)
    first.cancel()
    second = asyncio.create_task(client.llm.model(LLAMA))
    with pytest.raises(asyncio.CancelledError):
        await first
    handle = await second
    assert handle.identifier == LLAMA
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert lmstudio_server.cancel_count == 1
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 2


@pytest.mark.lmstudio_server(load_seconds=1.0)
async def test_concurrent_loads_of_different_models_overlap(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    start = time.monotonic()
    handles = await asyncio.gather(
        client.llm.load(LLAMA), client.llm.load(SMOL), client.embedding.load(NOMIC)
    )
    elapsed = time.monotonic() - start
    assert elapsed < 2.5, elapsed  # three 1-second loads in parallel, not in series
    assert sorted(h.identifier for h in handles) == sorted([LLAMA, SMOL, NOMIC])


# --- cancellation and deadlines -------------------------------------------------------


@pytest.mark.lmstudio_server(load_seconds=5.0)
@pytest.mark.parametrize("method", ["load", "model"])
async def test_cancelling_a_load_cancels_it_on_the_server(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, method: str
) -> None:
    progressed = asyncio.Event()
    call = getattr(client.llm, method)
    task = asyncio.create_task(call(LLAMA, on_progress=lambda p: p > 0 and progressed.set()))
    await asyncio.wait_for(progressed.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: lmstudio_server.cancel_count == 1)
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert lmstudio_server.loaded_instances() == []


@pytest.mark.lmstudio_server(load_seconds=5.0)
@pytest.mark.parametrize("method", ["load", "model"])
async def test_total_deadline_cancels_the_load(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, method: str
) -> None:
    start = time.monotonic()
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await getattr(client.llm, method)(LLAMA, timeout=lms.Timeouts(total=0.5))
    assert isinstance(info.value, TimeoutError)
    assert info.value.kind == "total"
    assert info.value.timeout == 0.5
    assert time.monotonic() - start < 2
    await eventually(lambda: lmstudio_server.cancel_count == 1)
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert lmstudio_server.loaded_instances() == []


@pytest.mark.lmstudio_server(load_seconds=1.5)
@pytest.mark.parametrize("method", ["load", "model"])
async def test_idle_deadline_allows_slow_load_that_reports_progress(
    lmstudio_server: ThreadedStandInServer, method: str
) -> None:
    # progress arrives every ~75 ms, so a 0.5 s idle deadline never fires on a 1.5 s load
    async with lms.AsyncClient(lmstudio_server.host, timeout=0.5) as client:
        llm = await getattr(client.llm, method)(LLAMA)
        assert llm.identifier == LLAMA


@pytest.mark.lmstudio_server(load_seconds=1.0)
async def test_one_callers_deadline_does_not_fail_the_others_of_a_shared_load(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    hasty_progress: list[float] = []
    hasty = asyncio.create_task(
        client.llm.model(LLAMA, timeout=lms.Timeouts(total=0.3), on_progress=hasty_progress.append)
    )
    patient = asyncio.create_task(client.llm.model(LLAMA))
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await hasty
    reported = len(hasty_progress)
    assert (info.value.kind, info.value.timeout) == ("total", 0.3)
    assert "Get-or-load of 'llama-3.2-1b-instruct'" in str(info.value)
    assert not patient.done()  # still waiting for the same load, which goes on
    handle = await patient
    assert handle.identifier == LLAMA
    assert len(hasty_progress) == reported  # no progress reported to a caller that has gone
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 1
    assert lmstudio_server.cancel_count == 0
    assert loaded_ids(lmstudio_server) == [LLAMA]


@pytest.mark.lmstudio_server(load_seconds=5.0)
async def test_the_last_caller_to_give_up_stops_the_shared_load(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    first = asyncio.create_task(client.llm.model(LLAMA, timeout=lms.Timeouts(total=0.3)))
    second = asyncio.create_task(client.llm.model(LLAMA, timeout=lms.Timeouts(total=0.6)))
    with pytest.raises(lms.LMStudioTimeoutError):
        await first
    await asyncio.sleep(0.1)
    assert lmstudio_server.cancel_count == 0  # the second caller still waits
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await second
    assert info.value.timeout == 0.6
    # The second was the last: the load is stopped before its error is raised.
    assert lmstudio_server.cancel_count == 1
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert lmstudio_server.loaded_instances() == []


async def test_idle_deadline_on_a_silent_server(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.list_loaded()  # connect first
    lmstudio_server.faults.silent = True
    start = time.monotonic()
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await client.llm.list_loaded(timeout=0.3)
    assert info.value.kind == "idle"
    assert 0.25 < time.monotonic() - start < 1.5
    start = time.monotonic()
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await client.llm.model(LLAMA, timeout=0.3)  # a get-or-load that hears nothing
    assert (info.value.kind, info.value.timeout) == ("idle", 0.3)
    # (then it waits, bounded, for the cancel to be acknowledged: the server stays silent)
    assert 0.25 < time.monotonic() - start < 1.5 + lms.LOAD_CANCEL_GRACE_SECONDS + 2.5


async def test_cancel_right_at_success_unloads_what_finished(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # A zero-time load finishes while the cancel is in flight; the client unloads the leftover.
    lmstudio_server.load_seconds = 0.0
    for _ in range(5):
        task = asyncio.create_task(client.llm.load(SMOL))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            await client.llm.unload(task.result().identifier)
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    await eventually(lambda: lmstudio_server.loaded_instances() == [])


@pytest.mark.lmstudio_server(load_seconds=0.3)
@pytest.mark.parametrize("method", ["load", "model"])
@pytest.mark.parametrize("delay", [0.0, 0.002, 0.02, 0.15, 0.28, 0.3, 0.32, 0.4])
async def test_cancellation_at_any_point_leaves_nothing_behind(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, method: str, delay: float
) -> None:
    await client.llm.list_loaded()  # connected, so the delay lands inside the load
    task = asyncio.create_task(getattr(client.llm, method)(SMOL))
    await asyncio.sleep(delay)
    task.cancel()
    try:
        owned = await task
    except asyncio.CancelledError:
        owned = None
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    expected = [] if owned is None else [owned.identifier]
    await eventually(lambda: loaded_ids(lmstudio_server) == expected)


async def test_no_channel_outlives_a_load(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.load(SMOL)
    assert lmstudio_server.open_channel_count() == 0
    await client.llm.model(LLAMA)
    assert lmstudio_server.open_channel_count() == 0
    await client.llm.model(LLAMA)  # already loaded
    assert lmstudio_server.open_channel_count() == 0


async def test_a_call_an_older_lm_studio_does_not_know_fails_at_once(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # LM Studio answers a request to an endpoint it lacks (estimateModelUsage came in
    # late 2025) with only a warning: the call fails then, not at its idle deadline.
    def asked() -> int:
        return sum(
            isinstance(f.message, dict) and f.message.get("endpoint") == "estimateModelUsage"
            for f in lmstudio_server.received_frames(namespace="llm")
        )

    lmstudio_server.faults.missing_endpoints = {"estimateModelUsage"}
    started = time.monotonic()
    with pytest.raises(lms.UnsupportedEndpointError) as info:
        await client.llm.estimate(LLAMA, timeout=30)
    assert time.monotonic() - started < 10  # not the 30 s idle deadline
    assert isinstance(info.value, lms.ServerError)
    assert info.value.endpoint == "estimateModelUsage"
    assert "does not support 'estimateModelUsage'" in str(info.value)
    assert asked() == 1
    # Later calls on that connection fail before anything is sent; the socket is fine.
    with pytest.raises(lms.UnsupportedEndpointError):
        await client.llm.estimate(LLAMA)
    assert asked() == 1
    assert await client.llm.list_loaded() == []
    # LM Studio updated (a new connection): asked again.
    lmstudio_server.faults.missing_endpoints = set()
    lmstudio_server.faults.drop_connections()
    assert (await client.llm.estimate(LLAMA)).total_bytes > 0
    assert asked() == 2


async def test_a_handle_unloads_only_where_its_instance_is(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # With LM Link, LM Studio looks for an identifier on the preferred device first when
    # no device is given; a handle knows its instance is local, and says so (null), as the
    # JS SDK's handles do. The namespace's unload(identifier) leaves the choice to LM Studio.
    def unloads() -> list[dict[str, Any]]:
        return [
            m["parameter"]
            for m in lmstudio_server.received_messages(type="rpcCall", endpoint="unloadModel")
        ]

    first = await client.llm.load(SMOL, "first")
    await client.llm.load(SMOL, "second")
    await first.unload()
    await client.llm.unload("second")
    assert unloads() == [
        {"identifier": "first", "deviceIdentifier": None},
        {"identifier": "second"},
    ]
    async with client.llm.loaded(SMOL, "scoped"):
        pass
    assert unloads()[-1] == {"identifier": "scoped", "deviceIdentifier": None}
    assert loaded_ids(lmstudio_server) == []


@pytest.mark.lmstudio_server(devices={"gpu-box": 48})
@pytest.mark.parametrize("by", ["model key", "identifier"])
async def test_a_reload_unloads_the_instance_on_its_own_device(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, by: str
) -> None:
    identifier = QWEN if by == "model key" else "remote-q"
    await client.llm.load(QWEN, identifier, device="gpu-box", config={"context_length": 2048})
    lmstudio_server.clear_logs()
    await client.llm.model(identifier, config={"context_length": 4096}, on_config_mismatch="reload")
    [unload] = lmstudio_server.received_messages(type="rpcCall", endpoint="unloadModel")
    assert unload["parameter"] == {"identifier": identifier, "deviceIdentifier": "gpu-box"}


async def test_concurrent_first_calls_to_a_missing_endpoint_draw_one_warning(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # LM Studio sends at most five warnings per connection: ten concurrent first calls to
    # an endpoint it lacks send one request (the probe); the others wait for its answer.
    lmstudio_server.faults.missing_endpoints = {"estimateModelUsage"}
    results = await asyncio.gather(
        *(client.llm.estimate(LLAMA) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, lms.UnsupportedEndpointError) for r in results)
    asked = lmstudio_server.received_messages(type="rpcCall", endpoint="estimateModelUsage")
    assert len(asked) == 1
    # On a server that has it, concurrent first calls all get their answer.
    lmstudio_server.faults.missing_endpoints = set()
    lmstudio_server.faults.drop_connections()
    estimates = await asyncio.gather(*(client.llm.estimate(LLAMA) for _ in range(10)))
    assert len({e.total_bytes for e in estimates}) == 1

