"""Model info / instance info / estimate Structs and their decoders."""

from __future__ import annotations

import gc
import json
import typing
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmstudio_async._protocol.info import (
    ESTIMATE_RESULT_DECODER,
    INSTANCE_INFO_DECODER,
    INSTANCE_INFO_LIST_DECODER,
    MODEL_INFO_DECODER,
    MODEL_INFO_LIST_DECODER,
    EmbeddingModelInfo,
    EmbeddingModelInstanceInfo,
    EstimateResult,
    LlmInfo,
    LlmInstanceInfo,
    MemoryEstimate,
    Quantization,
    decode_estimate_result,
    decode_instance_info,
    decode_instance_info_list,
    decode_model_info,
    decode_model_info_list,
    encode_info,
)
from lmstudio_async.errors import ProtocolError

# protocol.md §6.2 examples, verbatim.
LLM_INSTANCE = (
    b'{"type":"llm","modelKey":"llama-3.2-1b-instruct","format":"gguf",'
    b'"displayName":"Llama 3.2 1B Instruct","publisher":"hugging-quants",'
    b'"path":"hugging-quants/Llama-3.2-1B-Instruct-Q8_0-GGUF/llama-3.2-1b-instruct-q8_0.gguf",'
    b'"sizeBytes":1321082528,'
    b'"indexedModelIdentifier":"hugging-quants/Llama-3.2-1B-Instruct-Q8_0-GGUF/llama-3.2-1b-instruct-q8_0.gguf",'
    b'"deviceIdentifier":null,"paramsString":"1B","architecture":"llama",'
    b'"quantization":{"name":"Q8_0","bits":8},"vision":false,"trainedForToolUse":true,'
    b'"maxContextLength":131072,"identifier":"llama-3.2-1b-instruct",'
    b'"instanceReference":"0b6f1f0e-5c7e-4f0a-9d8f-3f0c2b1a9e77","ttlMs":3600000,'
    b'"lastUsedTime":1760000000000,"contextLength":4096}'
)
EMBEDDING_INSTANCE = (
    b'{"type":"embedding","modelKey":"text-embedding-nomic-embed-text-v1.5","format":"gguf",'
    b'"displayName":"Nomic Embed Text v1.5","publisher":"nomic-ai",'
    b'"path":"nomic-ai/nomic-embed-text-v1.5-GGUF/nomic-embed-text-v1.5.Q4_K_M.gguf",'
    b'"sizeBytes":84106624,'
    b'"indexedModelIdentifier":"nomic-ai/nomic-embed-text-v1.5-GGUF/nomic-embed-text-v1.5.Q4_K_M.gguf",'
    b'"deviceIdentifier":null,"architecture":"nomic-bert","maxContextLength":2048,'
    b'"identifier":"text-embedding-nomic-embed-text-v1.5",'
    b'"instanceReference":"6a0c7d3b-2e4f-4b8a-a1c9-0d5e7f9b3c21","ttlMs":null,'
    b'"lastUsedTime":null,"contextLength":2048}'
)
# The older (PY schema) field subset: no JS-HEAD-only fields.
PY_LLM_INFO = {
    "type": "llm",
    "modelKey": "qwen2.5-7b-instruct-1m",
    "format": "gguf",
    "displayName": "Qwen2.5 7B Instruct 1M",
    "path": "lmstudio-community/Qwen2.5-7B-Instruct-1M-GGUF/Qwen2.5-7B-Instruct-1M-Q4_K_M.gguf",
    "sizeBytes": 4683073184,
    "paramsString": "7B",
    "architecture": "qwen2",
    "vision": False,
    "trainedForToolUse": True,
    "maxContextLength": 1010000,
}
PY_EMBEDDING_INSTANCE = {
    "type": "embedding",
    "modelKey": "e5",
    "format": "safetensors",
    "displayName": "E5",
    "path": "x/e5",
    "sizeBytes": 10,
    "maxContextLength": 512,
    "identifier": "e5",
    "instanceReference": "ref",
    "contextLength": 512,
}
ESTIMATE = (
    b'{"memory":{"confidence":"high","modelVramBytes":1200000000,"contextVramBytes":150000000,'
    b'"totalVramBytes":1350000000,"modelBytes":1300000000,"contextBytes":160000000,'
    b'"totalBytes":1460000000},"passesGuardrails":true}'
)


def _enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --------------------------------------------------------------------------- examples


def test_llm_instance_example() -> None:
    info = decode_instance_info(LLM_INSTANCE)
    assert isinstance(info, LlmInstanceInfo)
    assert isinstance(info, LlmInfo)
    assert info.type == "llm"
    assert info.model_key == "llama-3.2-1b-instruct"
    assert info.format == "gguf"
    assert info.display_name == "Llama 3.2 1B Instruct"
    assert info.publisher == "hugging-quants"
    assert info.size_bytes == 1321082528
    assert info.indexed_model_identifier == info.path
    assert info.device_identifier is None
    assert info.params_string == "1B"
    assert info.architecture == "llama"
    assert info.quantization == Quantization(name="Q8_0", bits=8)
    assert info.vision is False
    assert info.trained_for_tool_use is True
    assert info.max_context_length == 131072
    assert info.identifier == "llama-3.2-1b-instruct"
    assert info.instance_reference == "0b6f1f0e-5c7e-4f0a-9d8f-3f0c2b1a9e77"
    assert info.ttl_ms == 3600000
    assert info.ttl == 3600.0
    assert info.last_used_time == 1760000000000
    assert info.last_used == datetime(2025, 10, 9, 8, 53, 20, tzinfo=UTC)
    assert info.last_used is not None
    assert info.last_used.tzinfo is not None
    assert info.context_length == 4096
    assert info.variants is None
    assert info.selected_variant is None


def test_embedding_instance_example() -> None:
    info = decode_instance_info(msgspec.Raw(EMBEDDING_INSTANCE))
    assert isinstance(info, EmbeddingModelInstanceInfo)
    assert isinstance(info, EmbeddingModelInfo)
    assert info.type == "embedding"
    assert info.architecture == "nomic-bert"
    assert info.ttl_ms is None
    assert info.ttl is None
    assert info.last_used_time is None
    assert info.last_used is None
    assert info.context_length == 2048
    assert info.quantization is None
    assert not hasattr(info, "vision")


def test_example_round_trips_to_same_json() -> None:
    for raw in (LLM_INSTANCE, EMBEDDING_INSTANCE):
        info = INSTANCE_INFO_DECODER.decode(raw)
        again = json.loads(encode_info(info))
        original = json.loads(raw)
        # Encoding keeps every field (optional ones as null) and the type tag.
        assert {k: v for k, v in again.items() if v is not None} == {
            k: v for k, v in original.items() if v is not None
        }
        assert again["type"] == original["type"]


def test_older_schema_subset() -> None:
    info = decode_model_info(_enc(PY_LLM_INFO))
    assert isinstance(info, LlmInfo)
    assert not isinstance(info, LlmInstanceInfo)
    assert info.publisher is None
    assert info.indexed_model_identifier is None
    assert info.quantization is None
    assert info.variants is None
    inst = decode_instance_info(_enc(PY_EMBEDDING_INSTANCE))
    assert isinstance(inst, EmbeddingModelInstanceInfo)
    assert inst.ttl is None
    assert inst.params_string is None


def test_unknown_fields_ignored() -> None:
    data = {
        **PY_LLM_INFO,
        "somethingNew": {"nested": [1, 2]},
        "quantization": {"name": "Q4", "bits": 4, "x": 1},
    }
    info = decode_model_info(_enc(data))
    assert info.quantization == Quantization(name="Q4", bits=4)


def test_variants_and_selected_variant() -> None:
    data = {**PY_LLM_INFO, "variants": ["a@q4", "a@q8"], "selectedVariant": "a@q4"}
    info = decode_model_info(_enc(data))
    assert info.variants == ("a@q4", "a@q8")
    assert info.selected_variant == "a@q4"


def test_quantization_without_bits() -> None:
    info = decode_model_info(_enc({**PY_LLM_INFO, "quantization": {"name": "MLX"}}))
    assert info.quantization == Quantization(name="MLX", bits=None)


def test_float_ttl_and_last_used() -> None:
    data = {**PY_EMBEDDING_INSTANCE, "ttlMs": 1500.5, "lastUsedTime": 1000.5}
    info = decode_instance_info(_enc(data))
    assert info.ttl == pytest.approx(1.5005)
    assert info.last_used == datetime(1970, 1, 1, 0, 0, 1, 500, tzinfo=UTC)


def test_model_info_list() -> None:
    embedding_info = {
        k: v
        for k, v in PY_EMBEDDING_INSTANCE.items()
        if k not in ("identifier", "instanceReference", "contextLength")
    }
    raw = _enc([PY_LLM_INFO, embedding_info])
    infos = decode_model_info_list(raw)
    assert [type(i) for i in infos] == [LlmInfo, EmbeddingModelInfo]
    assert MODEL_INFO_LIST_DECODER.decode(raw) == infos
    assert decode_model_info_list(b"[]") == []


def test_instance_info_list() -> None:
    raw = b"[" + LLM_INSTANCE + b"," + EMBEDDING_INSTANCE + b"]"
    infos = decode_instance_info_list(raw)
    assert [i.identifier for i in infos] == [
        "llama-3.2-1b-instruct",
        "text-embedding-nomic-embed-text-v1.5",
    ]
    assert INSTANCE_INFO_LIST_DECODER.decode(raw) == infos


def test_decoded_infos_are_not_tracked_by_the_garbage_collector() -> None:
    # gc=False is safe only while every field is a scalar, a tuple of strings or another
    # such Struct: this test fails if a field type that could hold a cycle is added.
    infos = decode_instance_info_list(b"[" + LLM_INSTANCE + b"," + EMBEDDING_INSTANCE + b"]")
    estimate = decode_estimate_result(ESTIMATE)
    for obj in (*infos, infos[0].quantization, estimate, estimate.memory):
        assert not gc.is_tracked(obj), obj
    allowed = (str, int, float, bool, type(None), Quantization, MemoryEstimate)
    for cls in (LlmInstanceInfo, EmbeddingModelInstanceInfo, EstimateResult, MemoryEstimate):
        assert cls.__struct_config__.gc is False, cls
        for field in msgspec.structs.fields(cls):
            args = typing.get_args(field.type) or (field.type,)
            for arg in args:
                inner = typing.get_args(arg)
                if typing.get_origin(arg) is tuple:
                    assert inner == (str, Ellipsis), (cls, field.name)
                else:
                    assert arg in allowed, (cls, field.name, arg)


def test_list_skips_unknown_domains() -> None:
    image = {**PY_LLM_INFO, "type": "imageGen"}
    infos = decode_model_info_list(_enc([image, PY_LLM_INFO, {"type": "tts"}]))
    assert len(infos) == 1
    assert infos[0].model_key == PY_LLM_INFO["modelKey"]
    inst = decode_instance_info_list(_enc([{"type": "drafter"}, PY_EMBEDDING_INSTANCE]))
    assert [i.identifier for i in inst] == ["e5"]


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"{}",
        _enc({**PY_LLM_INFO, "sizeBytes": "big"}),
        _enc({k: v for k, v in PY_LLM_INFO.items() if k != "modelKey"}),
        _enc({**PY_LLM_INFO, "type": "imageGen"}),
        _enc({k: v for k, v in PY_LLM_INFO.items() if k != "vision"}),
    ],
)
def test_decode_model_info_invalid(raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="Could not decode model info"):
        decode_model_info(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[",
        b"{}",
        _enc([{**PY_LLM_INFO, "sizeBytes": "big"}]),
        _enc([{"type": "imageGen"}, {**PY_LLM_INFO, "sizeBytes": "big"}]),
        _enc([PY_LLM_INFO, 5]),
    ],
)
def test_decode_model_info_list_invalid(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_model_info_list(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        _enc(PY_LLM_INFO),  # not an instance
        _enc({**PY_EMBEDDING_INSTANCE, "contextLength": None}),
        _enc({**PY_EMBEDDING_INSTANCE, "ttlMs": "soon"}),
    ],
)
def test_decode_instance_info_invalid(raw: bytes) -> None:
    with pytest.raises(ProtocolError, match="Could not decode model instance info"):
        decode_instance_info(raw)


def test_decode_instance_info_list_invalid() -> None:
    with pytest.raises(ProtocolError):
        decode_instance_info_list(_enc([PY_LLM_INFO]))
    with pytest.raises(ProtocolError):
        decode_instance_info_list(b"nope")


def test_structs_are_frozen_and_hashable() -> None:
    info = decode_instance_info(LLM_INSTANCE)
    with pytest.raises(AttributeError):
        info.identifier = "x"  # type: ignore[misc]
    assert hash(info) == hash(decode_instance_info(LLM_INSTANCE))


def test_single_model_info_decoder_accepts_instances_as_infos() -> None:
    # An instance payload is also a valid ModelInfo (extra fields ignored).
    info = MODEL_INFO_DECODER.decode(LLM_INSTANCE)
    assert type(info) is LlmInfo


# --------------------------------------------------------------------------- estimate


def test_estimate_example() -> None:
    est = decode_estimate_result(ESTIMATE)
    assert est.fits is True
    assert est.passes_guardrails is True
    assert est.total_bytes == 1460000000
    assert est.memory == MemoryEstimate(
        confidence="high",
        model_vram_bytes=1200000000,
        context_vram_bytes=150000000,
        total_vram_bytes=1350000000,
        model_bytes=1300000000,
        context_bytes=160000000,
        total_bytes=1460000000,
    )
    assert json.loads(encode_info(est)) == json.loads(ESTIMATE)


def test_estimate_byte_counts_are_ints_even_when_sent_as_floats() -> None:
    # LM Studio computes estimates with JavaScript numbers; users get ints (typed as int).
    sent = json.loads(ESTIMATE)
    sent["memory"] = {k: (v + 0.4 if k != "confidence" else v) for k, v in sent["memory"].items()}
    est = decode_estimate_result(json.dumps(sent))
    assert est.total_bytes == 1460000000
    assert type(est.total_bytes) is int
    assert all(
        type(getattr(est.memory, f)) is int for f in MemoryEstimate.__struct_fields__[1:]
    )
    assert ESTIMATE_RESULT_DECODER.decode(ESTIMATE).memory.total_bytes == est.total_bytes


def test_estimate_invalid() -> None:
    with pytest.raises(ProtocolError, match="memory estimate"):
        decode_estimate_result(b'{"memory":{}}')


# --------------------------------------------------------------------------- hypothesis

_s = st.text(max_size=20)
_opt_s = st.none() | _s
_int = st.integers(min_value=0, max_value=2**53)
_num = st.none() | _int | st.floats(min_value=0, max_value=1e15, allow_nan=False)

_base = {
    "model_key": _s,
    "format": st.sampled_from(["gguf", "safetensors", "onnx", "ggml", "pte", "mlx_placeholder"]),
    "display_name": _s,
    "path": _s,
    "size_bytes": _int,
    "max_context_length": _int,
    "publisher": _opt_s,
    "indexed_model_identifier": _opt_s,
    "device_identifier": _opt_s,
    "params_string": _opt_s,
    "architecture": _opt_s,
    "quantization": st.none()
    | st.builds(Quantization, name=_s, bits=st.none() | st.integers(1, 32)),
    "variants": st.none() | st.lists(_s, max_size=3).map(tuple),
    "selected_variant": _opt_s,
}
_llm = {**_base, "vision": st.booleans(), "trained_for_tool_use": st.booleans()}
_inst = {
    "identifier": _s,
    "instance_reference": _s,
    "context_length": _int,
    "ttl_ms": _num,
    "last_used_time": st.none() | st.integers(0, 4_000_000_000_000),
}

_model_infos = st.builds(LlmInfo, **_llm) | st.builds(EmbeddingModelInfo, **_base)
_instance_infos = st.builds(LlmInstanceInfo, **_llm, **_inst) | st.builds(
    EmbeddingModelInstanceInfo, **_base, **_inst
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_model_infos, max_size=3))
def test_model_info_round_trip(infos: list[Any]) -> None:
    raw = msgspec.json.encode(infos)
    assert decode_model_info_list(raw) == infos
    for info in infos:
        assert decode_model_info(encode_info(info)) == info


@settings(max_examples=200, deadline=None)
@given(st.lists(_instance_infos, max_size=3))
def test_instance_info_round_trip(infos: list[Any]) -> None:
    raw = msgspec.json.encode(infos)
    decoded = decode_instance_info_list(raw)
    assert decoded == infos
    for info in decoded:
        assert info.type in ("llm", "embedding")
        if info.ttl_ms is not None:
            assert info.ttl == pytest.approx(info.ttl_ms / 1000)
        if info.last_used_time is not None:
            assert info.last_used is not None
            assert info.last_used.tzinfo is UTC


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        EstimateResult,
        memory=st.builds(
            MemoryEstimate,
            confidence=st.sampled_from(["high", "low"]),
            model_vram_bytes=_int,
            context_vram_bytes=_int,
            total_vram_bytes=_int,
            model_bytes=_int,
            context_bytes=_int,
            total_bytes=_int,
        ),
        passes_guardrails=st.booleans(),
    )
)
def test_estimate_round_trip(est: EstimateResult) -> None:
    assert decode_estimate_result(encode_info(est)) == est
    assert est.fits is est.passes_guardrails
