"""The official ``lmstudio`` SDK's AsyncClient against the stand-in, unchanged."""

from __future__ import annotations

import itertools

import lmstudio
import pytest

from lmstudio_async.testing import ThreadedStandInServer

pytestmark = pytest.mark.conformance

LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
SMOL = "smollm2-135m-instruct"


async def test_list_downloaded(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        all_models = await client.list_downloaded_models()
        llms = await client.llm.list_downloaded()
        embeddings = await client.embedding.list_downloaded()
    assert len(all_models) == 5
    assert {m.model_key for m in llms} == {
        LLAMA,
        SMOL,
        "mobilevlm_v2-1.7b",
        "qwen2.5-7b-instruct-1m",
    }
    assert [m.model_key for m in embeddings] == [NOMIC]
    # the auth packet lmstudio 1.5 sends: guest identity, authVersion 1
    auth = lmstudio_server.received_messages(namespace="llm")[0]
    assert auth["authVersion"] == 1
    assert isinstance(auth["clientIdentifier"], str)


async def test_get_or_load_and_info(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.model(LLAMA)
        assert model.identifier == LLAMA
        again = await client.llm.model(LLAMA)
        assert again.identifier == LLAMA
        info = await model.get_info()
        assert info.model_key == LLAMA
        assert info.context_length == 4096
        assert await model.get_context_length() == 4096
        assert [m.identifier for m in await client.llm.list_loaded()] == [LLAMA]
    [inst] = lmstudio_server.loaded_instances()
    assert inst.jit
    assert inst.ttl_ms == 3_600_000  # lmstudio-python's default TTL
    [create] = lmstudio_server.received_messages(type="channelCreate", endpoint="getOrLoad")[:1]
    assert create["creationParameter"]["loadTtlMs"] == 3_600_000


async def test_load_new_instance_identifiers(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        custom = await client.llm.load_new_instance(SMOL, "my-smol", ttl=None)
        assert custom.identifier == "my-smol"
        auto1 = await client.llm.load_new_instance("hugging-quants/llama-3.2-1b-instruct")
        auto2 = await client.llm.load_new_instance(LLAMA)
        assert auto1.identifier == LLAMA
        prefix, _, suffix = auto2.identifier.partition(":")
        assert prefix == LLAMA
        assert suffix.isdecimal()
        with pytest.raises(lmstudio.LMStudioServerError, match="already exists"):
            await client.llm.load_new_instance(LLAMA, "my-smol")
    [create] = lmstudio_server.received_messages(type="channelCreate", endpoint="loadModel")[:1]
    assert "ttlMs" not in create["creationParameter"]  # ttl=None sends nothing


async def test_unload(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.load_new_instance(SMOL)
        await model.unload()
        assert await client.llm.list_loaded() == []
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await client.llm.unload("No such model")
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await client.llm.get_model_info("No such model")
    assert lmstudio_server.loaded_instances() == []


async def test_load_config_round_trip(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.load_new_instance(
            LLAMA, config={"contextLength": 4096, "gpu": {"ratio": 0.5}, "seed": 313}
        )
        config = await model.get_load_config()
        assert config.context_length == 4096
        assert config.gpu is not None
        assert config.gpu.ratio == 0.5
        assert config.seed == 313
        assert await model.get_context_length() == 4096


async def test_load_progress_callback(lmstudio_server: ThreadedStandInServer) -> None:
    progress: list[float] = []
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        await client.llm.load_new_instance(SMOL, on_load_progress=progress.append)
    assert len(progress) >= 10
    assert all(a < b for a, b in itertools.pairwise(progress))
    assert progress[-1] == 1.0


async def test_ttl_expiry(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.llm.load_new_instance(SMOL, ttl=60)
        lmstudio_server.advance_clock(61)
        assert await client.llm.list_loaded() == []
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await model.get_info()


async def test_embedding(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        model = await client.embedding.load_new_instance(NOMIC, config={"contextLength": 1024})
        info = await model.get_info()
        assert info.model_key == NOMIC
        assert await model.get_context_length() == 1024
        config = await model.get_load_config()
        assert config.context_length == 1024
        vector = await model.embed("Hello, world!")
        assert len(vector) == 768
        assert await model.count_tokens("Hello, world!") == 4


async def test_jit_auto_evict(lmstudio_server: ThreadedStandInServer) -> None:
    async with lmstudio.AsyncClient(lmstudio_server.host) as client:
        embedding = await client.embedding.model(NOMIC, ttl=300)
        await client.llm.model(SMOL, ttl=300)
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await embedding.get_info()
        assert [m.identifier for m in await client.llm.list_loaded()] == [SMOL]
        assert await client.embedding.list_loaded() == []
