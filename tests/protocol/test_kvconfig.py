"""Typed load configs and KV config conversion, both ways."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lmstudio import LlmLoadModelConfig
from lmstudio._kv_config import load_config_to_kv_config_stack, parse_llm_load_config

from lmstudio_async._protocol.kvconfig import (
    API_OVERRIDE_LAYER,
    GPU_SPLIT_KEY,
    KV_CONFIG_DECODER,
    KV_CONFIG_STACK_DECODER,
    KvConfig,
    KvConfigStack,
    KvField,
    KvLayer,
    coerce_load_config,
    collapse_stack,
    config_class,
    config_differences,
    fields_to_load_config,
    load_config_keys,
    load_config_stack,
    load_config_to_fields,
)
from lmstudio_async.config import EmbeddingLoadConfig, LlmLoadConfig
from lmstudio_async.errors import ConfigError, LMStudioValueError

CACHE_TYPES = ["f32", "f16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]


def _kv(fields: list[KvField]) -> dict[str, Any]:
    return {f.key: f.value for f in fields}


# --------------------------------------------------------------------------- config Structs


def test_defaults_are_all_none() -> None:
    for cls in (LlmLoadConfig, EmbeddingLoadConfig):
        cfg = cls()
        assert all(getattr(cfg, f) is None for f in cls.__struct_fields__)
        assert cfg.to_dict() == {}


def test_to_dict_only_set_fields() -> None:
    cfg = LlmLoadConfig(context_length=4096, flash_attention=False, seed=-1)
    assert cfg.to_dict() == {"context_length": 4096, "flash_attention": False, "seed": -1}


def test_repr_shows_only_set_fields() -> None:
    assert repr(LlmLoadConfig(context_length=8)) == "LlmLoadConfig(context_length=8)"


def test_frozen_and_hashable() -> None:
    cfg = LlmLoadConfig(context_length=8, disabled_gpus=(1,))
    with pytest.raises(AttributeError):
        cfg.context_length = 9  # type: ignore[misc]
    assert hash(cfg) == hash(LlmLoadConfig(context_length=8, disabled_gpus=(1,)))


def test_unknown_keyword_is_a_config_error_with_a_suggestion() -> None:
    # The same error and hint as the dict form (coerce_load_config), not a bare TypeError.
    hint = r"'contxt_length' for llm models \(did you mean 'context_length'\?\)"
    with pytest.raises(ConfigError, match=hint) as info:
        LlmLoadConfig(contxt_length=4096)  # type: ignore[call-arg]
    assert info.value.field == "contxt_length"
    with pytest.raises(ConfigError) as from_dict:
        coerce_load_config("llm", {"contxt_length": 4096})
    assert str(from_dict.value) == str(info.value)
    with pytest.raises(ConfigError, match="only applies to llm models"):
        EmbeddingLoadConfig(flash_attention=True)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="keyword arguments only"):
        LlmLoadConfig(4096)  # type: ignore[misc]
    assert LlmLoadConfig(context_length=4096).context_length == 4096


def test_gpu_split_fields_made_explicit() -> None:
    cfg = LlmLoadConfig(main_gpu=1)
    assert cfg.split_strategy == "evenly"
    assert cfg.disabled_gpus == ()
    emb = EmbeddingLoadConfig(disabled_gpus=[2, 3])  # type: ignore[arg-type]
    assert emb.disabled_gpus == (2, 3)
    assert emb.split_strategy == "evenly"
    assert emb.main_gpu is None
    cfg = LlmLoadConfig(split_strategy="favor_main_gpu", main_gpu=0)
    assert cfg.disabled_gpus == ()
    assert LlmLoadConfig(gpu_offload=0.5).split_strategy is None


def test_context_length_max_is_a_value_the_client_resolves() -> None:
    # "max" is accepted by both configs and refused when encoded as is: a load call puts
    # the model's max_context_length in its place first (tested against the stand-in).
    for cls, domain in ((LlmLoadConfig, "llm"), (EmbeddingLoadConfig, "embedding")):
        cfg = cls(context_length="max")
        assert cfg.context_length == "max"
        assert coerce_load_config(domain, {"context_length": "max"}) == cfg  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="context_length='max'") as info:
            load_config_stack(domain, cfg)  # type: ignore[arg-type]
        assert info.value.field == "context_length"


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"context_length": -3},
            "context_length",
            "LlmLoadConfig.context_length: expected int > 0 or 'max', got -3",
        ),
        ({"context_length": 0}, "context_length", "expected int > 0 or 'max', got 0"),
        ({"context_length": 1.5}, "context_length", "expected int > 0 or 'max', got 1.5"),
        ({"context_length": "maximum"}, "context_length", "or 'max', got 'maximum' (str)"),
        ({"context_length": True}, "context_length", "got True (bool)"),
        ({"context_length": "4096"}, "context_length", "got '4096' (str)"),
        (
            {"gpu_offload": 1.01},
            "gpu_offload",
            "expected a ratio in [0, 1], 'max' or 'off', got 1.01",
        ),
        ({"gpu_offload": -0.1}, "gpu_offload", "got -0.1"),
        ({"gpu_offload": "full"}, "gpu_offload", "got 'full' (str)"),
        ({"gpu_offload": math.nan}, "gpu_offload", "got nan"),
        ({"gpu_offload": True}, "gpu_offload", "got True (bool)"),
        ({"main_gpu": -1}, "main_gpu", "expected int >= 0, got -1"),
        (
            {"split_strategy": "favorMainGpu"},
            "split_strategy",
            "expected one of 'evenly', 'favor_main_gpu'",
        ),
        ({"disabled_gpus": (0, -1)}, "disabled_gpus", "got (0, -1) (tuple)"),
        ({"disabled_gpus": 3}, "disabled_gpus", "a list of GPU indices"),
        ({"disabled_gpus": ("0",)}, "disabled_gpus", "a list of GPU indices"),
        ({"gpu_strict_vram_cap": 1}, "gpu_strict_vram_cap", "expected bool, got 1"),
        ({"offload_kv_cache_to_gpu": "yes"}, "offload_kv_cache_to_gpu", "expected bool"),
        ({"flash_attention": 0}, "flash_attention", "expected bool, got 0"),
        ({"eval_batch_size": 0}, "eval_batch_size", "expected int > 0, got 0"),
        ({"seed": -2}, "seed", "expected int >= -1, got -2"),
        ({"seed": 1.0}, "seed", "expected int >= -1, got 1.0"),
        (
            {"rope_frequency_base": -1.0},
            "rope_frequency_base",
            "expected finite number >= 0, got -1.0",
        ),
        ({"rope_frequency_scale": math.inf}, "rope_frequency_scale", "got inf"),
        ({"keep_model_in_memory": "true"}, "keep_model_in_memory", "expected bool"),
        ({"try_mmap": 0}, "try_mmap", "expected bool"),
        ({"use_fp16_for_kv_cache": 1}, "use_fp16_for_kv_cache", "expected bool"),
        ({"k_cache_quantization": "q9"}, "k_cache_quantization", "got 'q9' (str)"),
        ({"v_cache_quantization": False}, "v_cache_quantization", "got False (bool)"),
        ({"num_experts": -1}, "num_experts", "expected int >= 0, got -1"),
        (
            {"max_parallel_predictions": 0},
            "max_parallel_predictions",
            "expected int in [1, 1023], got 0",
        ),
        ({"max_parallel_predictions": 1024}, "max_parallel_predictions", "got 1024"),
    ],
)
def test_llm_config_validation(kwargs: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        LlmLoadConfig(**kwargs)
    assert info.value.field == field
    assert message in str(info.value)
    assert str(info.value).startswith(f"LlmLoadConfig.{field}: expected ")
    # The same error surfaces through coerce_load_config from a dict.
    with pytest.raises(ConfigError) as info2:
        coerce_load_config("llm", kwargs)
    assert info2.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"context_length": 0}, "context_length"),
        ({"gpu_offload": 2}, "gpu_offload"),
        ({"seed": -5}, "seed"),
        ({"eval_batch_size": -1}, "eval_batch_size"),
        ({"rope_frequency_base": "x"}, "rope_frequency_base"),
        ({"main_gpu": "0"}, "main_gpu"),
    ],
)
def test_embedding_config_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^EmbeddingLoadConfig\.{field}: ") as info:
        EmbeddingLoadConfig(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    "kwargs",
    [
        {"context_length": 1},
        {"gpu_offload": 0},
        {"gpu_offload": 1},
        {"gpu_offload": 0.0},
        {"gpu_offload": "max"},
        {"gpu_offload": "off"},
        {"seed": -1},
        {"rope_frequency_base": 0},
        {"rope_frequency_scale": 0.25},
        {"max_parallel_predictions": 1023},
        {"num_experts": 0},
        {"main_gpu": 0, "split_strategy": "favor_main_gpu", "disabled_gpus": ()},
        *({"k_cache_quantization": t, "v_cache_quantization": t} for t in CACHE_TYPES),
    ],
)
def test_valid_edge_values(kwargs: dict[str, Any]) -> None:
    assert LlmLoadConfig(**kwargs).to_dict().items() >= kwargs.items()


# --------------------------------------------------------------------------- coerce_load_config


def test_coerce_none_and_structs() -> None:
    assert coerce_load_config("llm", None) is None
    cfg = LlmLoadConfig(context_length=5)
    assert coerce_load_config("llm", cfg) is cfg
    emb = EmbeddingLoadConfig(context_length=5)
    assert coerce_load_config("embedding", emb) is emb
    assert coerce_load_config("llm", {}) == LlmLoadConfig()


def test_coerce_wrong_domain_struct() -> None:
    with pytest.raises(
        ConfigError, match="EmbeddingLoadConfig given for an LLM; use LlmLoadConfig"
    ) as info:
        coerce_load_config("llm", EmbeddingLoadConfig())
    assert info.value.field is None
    with pytest.raises(
        ConfigError, match="LlmLoadConfig given for an embedding model; use EmbeddingLoadConfig"
    ):
        coerce_load_config("embedding", LlmLoadConfig(context_length=4))


@pytest.mark.parametrize("bad", [42, "context_length=3", [("context_length", 3)], object()])
def test_coerce_wrong_container(bad: Any) -> None:
    with pytest.raises(ConfigError, match="load config must be LlmLoadConfig, a mapping or None"):
        coerce_load_config("llm", bad)


def test_coerce_unknown_domain() -> None:
    with pytest.raises(LMStudioValueError, match="unknown model domain 'tts'"):
        coerce_load_config("tts", {})  # type: ignore[call-overload]


def test_coerce_dict() -> None:
    cfg = coerce_load_config(
        "llm",
        {
            "context_length": 4096,
            "gpu_offload": 1,
            "disabled_gpus": [1],
            "k_cache_quantization": "q8_0",
        },
    )
    assert cfg == LlmLoadConfig(
        context_length=4096, gpu_offload=1.0, disabled_gpus=(1,), k_cache_quantization="q8_0"
    )
    assert isinstance(cfg, LlmLoadConfig)
    assert isinstance(cfg.disabled_gpus, tuple)


def test_unknown_field_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        coerce_load_config("llm", {"context_lenght": 4096})
    assert str(info.value) == (
        "unknown load config field 'context_lenght' for llm models (did you mean 'context_length'?)"
    )
    assert info.value.field == "context_lenght"


def test_unknown_camel_field_suggests_snake() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'flash_attention'\?"):
        coerce_load_config("llm", {"flashAtention": True})


def test_unknown_field_without_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        coerce_load_config("llm", {"zzz": 1})
    assert str(info.value) == "unknown load config field 'zzz' for llm models"


def test_llm_only_field_for_embedding() -> None:
    with pytest.raises(ConfigError) as info:
        coerce_load_config("embedding", {"flash_attention": True})
    assert str(info.value) == (
        "unknown load config field 'flash_attention' for embedding models "
        "(it only applies to llm models)"
    )
    assert info.value.field == "flash_attention"


def test_non_string_key() -> None:
    with pytest.raises(ConfigError, match="keys must be strings"):
        coerce_load_config("llm", {1: 2})


def test_official_sdk_spellings() -> None:
    cfg = coerce_load_config(
        "llm",
        {
            "contextLength": 1978,
            "gpu": {
                "ratio": 0.5,
                "mainGpu": 1,
                "splitStrategy": "favorMainGpu",
                "disabledGpus": [2],
            },
            "offloadKVCacheToGpu": True,
            "useFp16ForKVCache": False,
            "llamaKCacheQuantizationType": "q8_0",
            "llama_v_cache_quantization_type": "q4_0",
            "maxParallelPredictions": 2,
            "seed": 313,
        },
    )
    assert cfg == LlmLoadConfig(
        context_length=1978,
        gpu_offload=0.5,
        main_gpu=1,
        split_strategy="favor_main_gpu",
        disabled_gpus=(2,),
        offload_kv_cache_to_gpu=True,
        use_fp16_for_kv_cache=False,
        k_cache_quantization="q8_0",
        v_cache_quantization="q4_0",
        max_parallel_predictions=2,
        seed=313,
    )
    emb = coerce_load_config("embedding", {"gpu": {"main_gpu": 0, "split_strategy": "evenly"}})
    assert emb == EmbeddingLoadConfig(main_gpu=0, split_strategy="evenly", disabled_gpus=())


def test_duplicate_spellings_rejected() -> None:
    with pytest.raises(ConfigError, match="given twice") as info:
        coerce_load_config("llm", {"context_length": 1, "contextLength": 2})
    assert info.value.field == "context_length"
    with pytest.raises(ConfigError, match="given twice"):
        coerce_load_config("llm", {"gpu_offload": 1, "gpu": {"ratio": 0.5}})


def test_unknown_gpu_setting() -> None:
    with pytest.raises(ConfigError, match="unknown GPU setting 'numCpuExpertLayersRatio'") as info:
        coerce_load_config("llm", {"gpu": {"numCpuExpertLayersRatio": 0.5}})
    assert info.value.field == "gpu.numCpuExpertLayersRatio"


def test_gpu_must_be_mapping() -> None:
    with pytest.raises(ConfigError, match="use 'gpu_offload'") as info:
        coerce_load_config("llm", {"gpu": 0.5})
    assert info.value.field == "gpu"


def test_ill_typed_via_msgspec_path() -> None:
    with pytest.raises(ConfigError) as info:
        coerce_load_config("llm", {"disabled_gpus": {"a": 1}})
    assert info.value.field == "disabled_gpus"
    assert "LlmLoadConfig.disabled_gpus" in str(info.value)


# --------------------------------------------------------------------------- to the wire


def test_protocol_example_7_4() -> None:
    """protocol.md §7.4 PY example, in our field names."""
    cfg = LlmLoadConfig(context_length=1978, gpu_offload=0.5, disabled_gpus=(1, 2), seed=313)
    stack = load_config_stack("llm", cfg)
    expected = {
        "layers": [
            {
                "layerName": "apiOverride",
                "config": {
                    "fields": [
                        {"key": "llm.load.contextLength", "value": 1978},
                        {"key": "llm.load.llama.acceleration.offloadRatio", "value": 0.5},
                        {
                            "key": "load.gpuSplitConfig",
                            "value": {
                                "disabledGpus": [1, 2],
                                "strategy": "evenly",
                                "priority": [],
                                "customRatio": [],
                            },
                        },
                        {"key": "llm.load.seed", "value": {"checked": True, "value": 313}},
                    ]
                },
            }
        ]
    }
    assert len(stack["layers"]) == 1
    assert stack["layers"][0]["layerName"] == "apiOverride"
    assert collapse_stack(stack) == collapse_stack(expected)
    # Plain JSON, decodable with the Struct decoder.
    decoded = KV_CONFIG_STACK_DECODER.decode(json.dumps(stack).encode())
    assert collapse_stack(decoded) == collapse_stack(expected)
    # Same as a dict in the official SDK's shape.
    same = load_config_stack(
        "llm", {"contextLength": 1978, "gpu": {"ratio": 0.5, "disabledGpus": [1, 2]}, "seed": 313}
    )
    assert same == stack


@pytest.mark.parametrize("domain", ["llm", "embedding"])
@pytest.mark.parametrize("config", [None, {}])
def test_empty_stack_has_one_layer(domain: Any, config: Any) -> None:
    assert load_config_stack(domain, config) == {
        "layers": [{"layerName": "apiOverride", "config": {"fields": []}}]
    }
    assert load_config_to_fields(domain, config) == []


LLM_CASES: list[tuple[dict[str, Any], str, Any]] = [
    ({"context_length": 4096}, "llm.load.contextLength", 4096),
    ({"gpu_offload": "max"}, "llm.load.llama.acceleration.offloadRatio", "max"),
    ({"gpu_offload": 0.25}, "llm.load.llama.acceleration.offloadRatio", 0.25),
    ({"gpu_strict_vram_cap": True}, "load.gpuStrictVramCap", True),
    ({"offload_kv_cache_to_gpu": False}, "llm.load.offloadKVCacheToGpu", False),
    ({"flash_attention": True}, "llm.load.llama.flashAttention", True),
    ({"eval_batch_size": 512}, "llm.load.llama.evalBatchSize", 512),
    ({"seed": 7}, "llm.load.seed", {"checked": True, "value": 7}),
    (
        {"rope_frequency_base": 10000.0},
        "llm.load.llama.ropeFrequencyBase",
        {"checked": True, "value": 10000.0},
    ),
    (
        {"rope_frequency_scale": 0.5},
        "llm.load.llama.ropeFrequencyScale",
        {"checked": True, "value": 0.5},
    ),
    ({"keep_model_in_memory": False}, "llm.load.llama.keepModelInMemory", False),
    ({"try_mmap": False}, "llm.load.llama.tryMmap", False),
    ({"use_fp16_for_kv_cache": True}, "llm.load.llama.useFp16ForKVCache", True),
    (
        {"k_cache_quantization": "q8_0"},
        "llm.load.llama.kCacheQuantizationType",
        {"checked": True, "value": "q8_0"},
    ),
    (
        {"v_cache_quantization": "q4_0"},
        "llm.load.llama.vCacheQuantizationType",
        {"checked": True, "value": "q4_0"},
    ),
    ({"num_experts": 4}, "llm.load.numExperts", 4),
    ({"max_parallel_predictions": 8}, "llm.load.numParallelSessions", 8),
]
EMBEDDING_CASES: list[tuple[dict[str, Any], str, Any]] = [
    ({"context_length": 512}, "embedding.load.contextLength", 512),
    ({"gpu_offload": "off"}, "embedding.load.llama.acceleration.offloadRatio", "off"),
    ({"eval_batch_size": 64}, "embedding.load.llama.evalBatchSize", 64),
    ({"seed": -1}, "embedding.load.seed", {"checked": True, "value": -1}),
    (
        {"rope_frequency_base": 1.0},
        "embedding.load.llama.ropeFrequencyBase",
        {"checked": True, "value": 1.0},
    ),
    (
        {"rope_frequency_scale": 2.0},
        "embedding.load.llama.ropeFrequencyScale",
        {"checked": True, "value": 2.0},
    ),
    ({"keep_model_in_memory": True}, "embedding.load.llama.keepModelInMemory", True),
    ({"try_mmap": True}, "embedding.load.llama.tryMmap", True),
]


@pytest.mark.parametrize(
    ("domain", "kwargs", "key", "value"),
    [("llm", *c) for c in LLM_CASES] + [("embedding", *c) for c in EMBEDDING_CASES],
)
def test_single_field_mapping(domain: Any, kwargs: dict[str, Any], key: str, value: Any) -> None:
    fields = load_config_to_fields(domain, kwargs)
    assert fields == [KvField(key=key, value=value)]
    back = fields_to_load_config(domain, fields)
    assert back == config_class(domain)(**kwargs)
    assert load_config_keys(domain)[next(iter(kwargs))] == key


def test_every_field_has_a_key() -> None:
    for domain, cls in (("llm", LlmLoadConfig), ("embedding", EmbeddingLoadConfig)):
        assert set(load_config_keys(domain)) == set(cls.__struct_fields__)  # type: ignore[arg-type]
    assert load_config_keys("llm")["main_gpu"] == GPU_SPLIT_KEY


@pytest.mark.parametrize(
    ("kwargs", "split"),
    [
        (
            {"main_gpu": 1},
            {"strategy": "evenly", "disabledGpus": [], "priority": [1], "customRatio": []},
        ),
        (
            {"split_strategy": "favor_main_gpu", "main_gpu": 0},
            {"strategy": "priorityOrder", "disabledGpus": [], "priority": [0], "customRatio": []},
        ),
        (
            {"split_strategy": "favor_main_gpu"},
            {"strategy": "priorityOrder", "disabledGpus": [], "priority": [], "customRatio": []},
        ),
        (
            {"split_strategy": "evenly"},
            {"strategy": "evenly", "disabledGpus": [], "priority": [], "customRatio": []},
        ),
        (
            {"disabled_gpus": (0, 2)},
            {"strategy": "evenly", "disabledGpus": [0, 2], "priority": [], "customRatio": []},
        ),
    ],
)
@pytest.mark.parametrize("domain", ["llm", "embedding"])
def test_gpu_split_mapping(domain: Any, kwargs: dict[str, Any], split: dict[str, Any]) -> None:
    cfg = config_class(domain)(**kwargs)
    fields = load_config_to_fields(domain, cfg)
    assert fields == [KvField(key=GPU_SPLIT_KEY, value=split)]
    assert fields_to_load_config(domain, fields) == cfg


def test_gpu_offload_alone_leaves_split_alone() -> None:
    assert _kv(load_config_to_fields("llm", {"gpu_offload": 0.5})) == {
        "llm.load.llama.acceleration.offloadRatio": 0.5
    }


def test_field_values_are_json_plain() -> None:
    stack = load_config_stack("llm", LlmLoadConfig(disabled_gpus=(1, 2), main_gpu=1))
    text = json.dumps(stack)  # no tuples / Structs left
    assert '"disabledGpus": [1, 2]' in text


def test_load_config_to_fields_validates() -> None:
    with pytest.raises(ConfigError, match="context_lenght"):
        load_config_to_fields("llm", {"context_lenght": 1})
    with pytest.raises(ConfigError):
        load_config_stack("embedding", LlmLoadConfig())


# --------------------------------------------------------------------------- from the wire


def test_protocol_example_get_load_config() -> None:
    """protocol.md §4.7 getLoadConfig result."""
    raw = (
        b'{"fields":[{"key":"llm.load.contextLength","value":4096},'
        b'{"key":"llm.load.llama.acceleration.offloadRatio","value":"max"},'
        b'{"key":"llm.load.seed","value":{"checked":false,"value":-1}},'
        b'{"key":"load.gpuSplitConfig","value":{"strategy":"evenly","disabledGpus":[],"priority":[],"customRatio":[]}}]}'
    )
    kv = KV_CONFIG_DECODER.decode(raw)
    expected = LlmLoadConfig(
        context_length=4096, gpu_offload="max", split_strategy="evenly", disabled_gpus=()
    )
    assert fields_to_load_config("llm", kv) == expected
    assert fields_to_load_config("llm", kv.fields) == expected
    assert fields_to_load_config("llm", json.loads(raw)) == expected
    assert fields_to_load_config("llm", json.loads(raw)["fields"]) == expected


def test_full_default_set_from_server() -> None:
    fields = [
        {"key": "llm.load.contextLength", "value": 2048},
        {"key": "llm.load.llama.acceleration.offloadRatio", "value": 1},
        {"key": "llm.load.numCpuExpertLayersRatio", "value": "off"},
        {
            "key": "load.gpuSplitConfig",
            "value": {
                "strategy": "priorityOrder",
                "disabledGpus": [3],
                "priority": [1, 0],
                "customRatio": [],
            },
        },
        {"key": "load.gpuStrictVramCap", "value": False},
        {"key": "llm.load.offloadKVCacheToGpu", "value": True},
        {"key": "llm.load.llama.flashAttention", "value": False},
        {"key": "llm.load.llama.evalBatchSize", "value": 2048},
        {"key": "llm.load.llama.physicalBatchSize", "value": 512},
        {"key": "llm.load.seed", "value": {"checked": True, "value": 42}},
        {"key": "llm.load.llama.ropeFrequencyBase", "value": {"checked": False, "value": 0}},
        {"key": "llm.load.llama.ropeFrequencyScale", "value": {"checked": True, "value": 1}},
        {"key": "llm.load.llama.keepModelInMemory", "value": True},
        {"key": "llm.load.llama.tryMmap", "value": True},
        {"key": "llm.load.llama.useFp16ForKVCache", "value": True},
        {
            "key": "llm.load.llama.kCacheQuantizationType",
            "value": {"checked": False, "value": "f16"},
        },
        {
            "key": "llm.load.llama.vCacheQuantizationType",
            "value": {"checked": True, "value": "q8_0"},
        },
        {"key": "llm.load.numExperts", "value": 0},
        {"key": "llm.load.numParallelSessions", "value": 4},
        {"key": "llm.load.useUnifiedKvCache", "value": True},
        {"key": "envVars", "value": {}},
        {"key": "embedding.load.contextLength", "value": 99},  # other domain: ignored
    ]
    cfg = fields_to_load_config("llm", fields)
    assert cfg == LlmLoadConfig(
        context_length=2048,
        gpu_offload=1.0,
        main_gpu=1,
        split_strategy="favor_main_gpu",
        disabled_gpus=(3,),
        gpu_strict_vram_cap=False,
        offload_kv_cache_to_gpu=True,
        flash_attention=False,
        eval_batch_size=2048,
        seed=42,
        rope_frequency_scale=1.0,
        keep_model_in_memory=True,
        try_mmap=True,
        use_fp16_for_kv_cache=True,
        v_cache_quantization="q8_0",
        num_experts=0,
        max_parallel_predictions=4,
    )
    assert isinstance(cfg.rope_frequency_scale, float)
    emb = fields_to_load_config("embedding", fields)
    assert emb == EmbeddingLoadConfig(
        context_length=99, main_gpu=1, split_strategy="favor_main_gpu", disabled_gpus=(3,)
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("llm.load.contextLength", -1),
        ("llm.load.contextLength", "4096"),
        ("llm.load.contextLength", None),
        ("llm.load.contextLength", 1.5),
        ("llm.load.llama.acceleration.offloadRatio", 7),
        ("llm.load.llama.acceleration.offloadRatio", "auto"),
        ("llm.load.seed", 42),  # checkbox key without the checkbox wrapper
        ("llm.load.seed", {"checked": True}),  # no value
        ("llm.load.seed", {"checked": "yes", "value": 1}),
        ("llm.load.seed", {"checked": True, "value": "x"}),
        ("llm.load.seed", {"checked": True, "value": None}),
        ("llm.load.llama.kCacheQuantizationType", {"checked": True, "value": False}),
        ("llm.load.llama.flashAttention", "true"),
        ("llm.load.numParallelSessions", 0),
        (
            "load.gpuSplitConfig",
            {"strategy": "tensor", "disabledGpus": [], "priority": [], "customRatio": []},
        ),
        (
            "load.gpuSplitConfig",
            {"strategy": "custom", "disabledGpus": [], "priority": [], "customRatio": [0.5]},
        ),
        ("load.gpuSplitConfig", {"strategy": "evenly", "disabledGpus": "0", "priority": []}),
        ("load.gpuSplitConfig", {"strategy": "evenly", "disabledGpus": [-1], "priority": []}),
        (
            "load.gpuSplitConfig",
            {"strategy": "priorityOrder", "disabledGpus": [], "priority": ["a"]},
        ),
        ("load.gpuSplitConfig", {"strategy": "evenly", "disabledGpus": [], "priority": 3}),
        ("load.gpuSplitConfig", "evenly"),
        ("load.gpuSplitConfig", None),
    ],
)
def test_odd_values_are_skipped(key: str, value: Any) -> None:
    fields = [{"key": "llm.load.llama.tryMmap", "value": True}, {"key": key, "value": value}]
    assert fields_to_load_config("llm", fields) == LlmLoadConfig(try_mmap=True)


def test_odd_field_entries_are_skipped() -> None:
    fields: list[Any] = [
        {"key": 5, "value": 1},
        {"value": 1},
        "junk",
        None,
        KvField(key="llm.load.contextLength", value=64),
        {"key": "llm.load.llama.tryMmap"},  # value omitted
    ]
    assert fields_to_load_config("llm", fields) == LlmLoadConfig(context_length=64)
    assert fields_to_load_config("llm", {"fields": "nope"}) == LlmLoadConfig()
    assert fields_to_load_config("llm", {}) == LlmLoadConfig()


def test_later_fields_win() -> None:
    fields = [
        KvField(key="llm.load.contextLength", value=1),
        KvField(key="llm.load.contextLength", value=2),
        KvField(key="llm.load.seed", value={"checked": True, "value": 5}),
        KvField(key="llm.load.seed", value={"checked": False, "value": 5}),
    ]
    assert fields_to_load_config("llm", fields) == LlmLoadConfig(context_length=2)


def test_evenly_with_priority_reads_main_gpu() -> None:
    # What JS writes for mainGpu + evenly.
    fields = [
        {
            "key": GPU_SPLIT_KEY,
            "value": {"strategy": "evenly", "disabledGpus": [], "priority": [2], "customRatio": []},
        }
    ]
    assert fields_to_load_config("llm", fields) == LlmLoadConfig(
        main_gpu=2, split_strategy="evenly"
    )


def test_split_config_missing_lists_default_to_empty() -> None:
    fields = [{"key": GPU_SPLIT_KEY, "value": {"strategy": "priorityOrder"}}]
    assert fields_to_load_config("llm", fields) == LlmLoadConfig(split_strategy="favor_main_gpu")


# --------------------------------------------------------------------------- stacks


def test_collapse_stack_later_layers_override() -> None:
    stack = {
        "layers": [
            {
                "layerName": "instance",
                "config": {"fields": [{"key": "a", "value": 1}, {"key": "b", "value": 1}]},
            },
            {
                "layerName": "apiOverride",
                "config": {"fields": [{"key": "a", "value": 2}, {"key": "a", "value": 3}]},
            },
        ]
    }
    assert collapse_stack(stack) == {"a": 3, "b": 1}
    struct = msgspec.convert(stack, KvConfigStack)
    assert isinstance(struct.layers[0], KvLayer)
    assert struct.layers[1].layer_name == "apiOverride"
    assert collapse_stack(struct) == {"a": 3, "b": 1}


def test_collapse_stack_tolerates_junk() -> None:
    assert collapse_stack({}) == {}
    assert collapse_stack({"layers": "x"}) == {}
    assert collapse_stack(
        {"layers": [None, 5, {"config": None}, {"config": {"fields": [{"key": "k", "value": 1}]}}]}
    ) == {"k": 1}
    layer = KvLayer(layer_name="apiOverride", config=KvConfig(fields=[KvField(key="k", value=2)]))
    assert collapse_stack({"layers": [layer]}) == {"k": 2}


def test_structs_encode_in_wire_shape() -> None:
    stack = KvConfigStack(
        layers=[
            KvLayer(
                layer_name=API_OVERRIDE_LAYER, config=KvConfig(fields=[KvField(key="k", value=1)])
            )
        ]
    )
    assert json.loads(msgspec.json.encode(stack)) == {
        "layers": [{"layerName": "apiOverride", "config": {"fields": [{"key": "k", "value": 1}]}}]
    }
    assert KV_CONFIG_DECODER.decode(b'{"fields":[{"key":"k"}]}') == KvConfig(
        fields=[KvField(key="k")]
    )
    assert KV_CONFIG_DECODER.decode(b'{"fields":[],"extra":1}') == KvConfig()


# --------------------------------------------------------------------------- differences


def test_config_differences() -> None:
    requested = LlmLoadConfig(context_length=8192, seed=42, flash_attention=True, gpu_offload=0.5)
    effective = LlmLoadConfig(
        context_length=4096, flash_attention=True, gpu_offload=0.5 + 1e-12, try_mmap=True
    )
    assert config_differences(requested, effective) == {
        "context_length": (8192, 4096),
        "seed": (42, None),
    }
    assert config_differences(requested, effective, ignore_missing=True) == {
        "context_length": (8192, 4096)
    }
    assert config_differences(LlmLoadConfig(), effective) == {}
    assert config_differences(requested, requested) == {}


def test_config_differences_split_and_types() -> None:
    requested = LlmLoadConfig(main_gpu=1)  # implies evenly + no disabled GPUs
    effective = LlmLoadConfig(main_gpu=1, split_strategy="favor_main_gpu", disabled_gpus=())
    assert config_differences(requested, effective) == {
        "split_strategy": ("evenly", "favor_main_gpu")
    }
    assert config_differences(LlmLoadConfig(gpu_offload=1), LlmLoadConfig(gpu_offload=1.0)) == {}
    assert config_differences(LlmLoadConfig(gpu_offload=1.0), LlmLoadConfig(gpu_offload="max")) == {
        "gpu_offload": (1.0, "max")
    }
    assert config_differences(
        LlmLoadConfig(flash_attention=True), LlmLoadConfig(flash_attention=False)
    ) == {"flash_attention": (True, False)}


def test_config_differences_domain_mismatch() -> None:
    with pytest.raises(ConfigError, match="cannot compare LlmLoadConfig with EmbeddingLoadConfig"):
        config_differences(LlmLoadConfig(), EmbeddingLoadConfig())


# --------------------------------------------------------------------------- vs. official SDK


def _official_llm(cfg: LlmLoadConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    out: dict[str, Any] = {}
    gpu: dict[str, Any] = {}
    names = {
        "context_length": "contextLength",
        "gpu_strict_vram_cap": "gpuStrictVramCap",
        "offload_kv_cache_to_gpu": "offloadKVCacheToGpu",
        "flash_attention": "flashAttention",
        "eval_batch_size": "evalBatchSize",
        "seed": "seed",
        "rope_frequency_base": "ropeFrequencyBase",
        "rope_frequency_scale": "ropeFrequencyScale",
        "keep_model_in_memory": "keepModelInMemory",
        "try_mmap": "tryMmap",
        "use_fp16_for_kv_cache": "useFp16ForKVCache",
        "k_cache_quantization": "llamaKCacheQuantizationType",
        "v_cache_quantization": "llamaVCacheQuantizationType",
        "num_experts": "numExperts",
    }
    for name, value in d.items():
        if name == "gpu_offload":
            gpu["ratio"] = value
        elif name == "main_gpu":
            gpu["mainGpu"] = value
        elif name == "split_strategy":
            gpu["splitStrategy"] = "favorMainGpu" if value == "favor_main_gpu" else "evenly"
        elif name == "disabled_gpus":
            gpu["disabledGpus"] = list(value)
        else:
            out[names[name]] = value
    if gpu:
        out["gpu"] = gpu
    return out


_ratio = st.floats(min_value=0, max_value=1) | st.sampled_from(["max", "off"])
_pos_float = st.floats(min_value=0, max_value=1e6, allow_nan=False)
_gpu_idx = st.integers(min_value=0, max_value=7)

_COMMON = {
    "context_length": st.none() | st.integers(min_value=1, max_value=2**31),
    "gpu_offload": st.none() | _ratio,
    "main_gpu": st.none() | _gpu_idx,
    "split_strategy": st.none() | st.sampled_from(["evenly", "favor_main_gpu"]),
    "disabled_gpus": st.none() | st.lists(_gpu_idx, max_size=3).map(tuple),
    "rope_frequency_base": st.none() | _pos_float,
    "rope_frequency_scale": st.none() | _pos_float,
    "keep_model_in_memory": st.none() | st.booleans(),
    "try_mmap": st.none() | st.booleans(),
    "seed": st.none() | st.integers(min_value=-1, max_value=2**32),
    "eval_batch_size": st.none() | st.integers(min_value=1, max_value=65536),
}
_cache = st.none() | st.sampled_from(CACHE_TYPES)
llm_configs = st.builds(
    LlmLoadConfig,
    **_COMMON,
    gpu_strict_vram_cap=st.none() | st.booleans(),
    offload_kv_cache_to_gpu=st.none() | st.booleans(),
    flash_attention=st.none() | st.booleans(),
    use_fp16_for_kv_cache=st.none() | st.booleans(),
    k_cache_quantization=_cache,
    v_cache_quantization=_cache,
    num_experts=st.none() | st.integers(min_value=0, max_value=256),
    max_parallel_predictions=st.none() | st.integers(min_value=1, max_value=1023),
)
embedding_configs = st.builds(EmbeddingLoadConfig, **_COMMON)


@settings(max_examples=200, deadline=None)
@given(llm_configs)
def test_llm_round_trip(cfg: LlmLoadConfig) -> None:
    fields = load_config_to_fields("llm", cfg)
    assert fields_to_load_config("llm", fields) == cfg
    # ... also through JSON and the stack form.
    wire = json.loads(json.dumps(load_config_stack("llm", cfg)))
    assert fields_to_load_config("llm", wire["layers"][0]["config"]) == cfg
    assert coerce_load_config("llm", cfg.to_dict()) == cfg


@settings(max_examples=200, deadline=None)
@given(embedding_configs)
def test_embedding_round_trip(cfg: EmbeddingLoadConfig) -> None:
    fields = load_config_to_fields("embedding", cfg)
    assert fields_to_load_config("embedding", fields) == cfg
    wire = msgspec.json.decode(
        msgspec.json.encode(load_config_stack("embedding", cfg)), type=KvConfigStack
    )
    assert fields_to_load_config("embedding", wire.layers[0].config) == cfg
    assert all(f.key.startswith(("embedding.load.", "load.gpuSplitConfig")) for f in fields)


@settings(max_examples=200, deadline=None)
@given(llm_configs, llm_configs)
def test_differences_are_exactly_the_unequal_set_fields(a: LlmLoadConfig, b: LlmLoadConfig) -> None:
    diffs = config_differences(a, b)
    for name, value in a.to_dict().items():
        if name in diffs:
            assert diffs[name] == (value, getattr(b, name))
        else:
            assert getattr(b, name) == value or math.isclose(value, getattr(b, name))
    assert set(diffs) <= set(a.to_dict())


@settings(max_examples=200, deadline=None)
@given(llm_configs.filter(lambda c: c.max_parallel_predictions is None))
def test_matches_official_python_sdk(cfg: LlmLoadConfig) -> None:
    """Our wire form agrees with lmstudio-python's for the fields it knows, except
    for the documented GPU-split deviations (priority with 'evenly', and split
    config only written when a split field is set)."""
    official = load_config_to_kv_config_stack(
        LlmLoadModelConfig._from_any_api_dict(_official_llm(cfg)), LlmLoadModelConfig
    ).to_dict()
    theirs = collapse_stack(official)
    ours = collapse_stack(load_config_stack("llm", cfg))
    their_split = theirs.pop(GPU_SPLIT_KEY, None)
    our_split = ours.pop(GPU_SPLIT_KEY, None)
    assert ours == theirs
    if our_split is not None:
        assert their_split is not None
        if cfg.split_strategy == "evenly":
            their_split["priority"] = our_split["priority"]
        assert our_split == their_split
    # And the official parser reads our stack back to the same settings.
    parsed = parse_llm_load_config(load_config_stack("llm", cfg)["layers"][0]["config"])
    expected = LlmLoadModelConfig._from_any_api_dict(_official_llm(cfg))
    if expected.gpu is not None and cfg.split_strategy == "evenly" and parsed.gpu is not None:
        # PY does not read main_gpu back for 'evenly'.
        expected.gpu.main_gpu = None
    if expected.gpu is not None and parsed.gpu is not None and cfg.main_gpu is None:
        # PY adds the default split strategy; compare what both state.
        expected.gpu.split_strategy = parsed.gpu.split_strategy
    assert parsed.to_dict() == expected.to_dict()
