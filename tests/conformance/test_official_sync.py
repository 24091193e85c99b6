"""The official ``lmstudio`` SDK's sync Client against the stand-in, unchanged."""

from __future__ import annotations

import itertools

import lmstudio
import pytest

from lmstudio_async.testing import ThreadedStandInServer

pytestmark = pytest.mark.conformance

LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
SMOL = "smollm2-135m-instruct"


def test_sync_model_management(lmstudio_server: ThreadedStandInServer) -> None:
    progress: list[float] = []
    with lmstudio.Client(lmstudio_server.host) as client:
        assert len(client.list_downloaded_models()) == 5
        model = client.llm.model(LLAMA)
        assert model.identifier == LLAMA
        custom = client.llm.load_new_instance(
            SMOL, "custom", config={"contextLength": 4096, "gpu": {"ratio": 0.5}}
        )
        auto = client.llm.load_new_instance(SMOL, on_load_progress=progress.append)
        assert auto.identifier == SMOL
        config = custom.get_load_config()
        assert config.context_length == 4096
        assert config.gpu is not None
        assert config.gpu.ratio == 0.5
        assert custom.get_info().identifier == "custom"
        with pytest.raises(lmstudio.LMStudioServerError, match="already exists"):
            client.llm.load_new_instance(LLAMA, "custom")
        assert sorted(m.identifier for m in client.llm.list_loaded()) == ["custom", LLAMA, SMOL]
        custom.unload()
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            client.llm.unload("custom")
        embedding = client.embedding.model(NOMIC)
        assert embedding.get_context_length() == 2048
    assert progress[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(progress))
    assert {i.identifier for i in lmstudio_server.loaded_instances()} == {SMOL, NOMIC}


def test_sync_ttl_and_jit(lmstudio_server: ThreadedStandInServer) -> None:
    with lmstudio.Client(lmstudio_server.host) as client:
        embedding = client.embedding.model(NOMIC, ttl=300)
        client.llm.model(SMOL, ttl=300)  # evicts the JIT embedding model
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            embedding.get_info()
        client.llm.load_new_instance(LLAMA, ttl=5)
        lmstudio_server.advance_clock(6)
        assert [m.identifier for m in client.llm.list_loaded()] == [SMOL]
