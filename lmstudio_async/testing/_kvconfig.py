"""Load-configuration keys, their defaults and validation, plus the simulated memory model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import _schema as s
from ._errors import StandInError

# Default context length for LLMs: min(model maximum, DEFAULT_LLM_CONTEXT).
DEFAULT_LLM_CONTEXT = 4096
# Default context length for embedding models: min(model maximum, DEFAULT_EMBEDDING_CONTEXT).
DEFAULT_EMBEDDING_CONTEXT = 2048
# Simulated KV cache: one f16 token costs ceil(sizeBytes / KV_DIVISOR) bytes.
KV_DIVISOR = 40_000
BYTES_PER_GB = 1_000_000_000

_CACHE_TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
# Relative size of one K or V cache element compared to f16.
_CACHE_FACTOR = {
    "f32": 2.0,
    "f16": 1.0,
    "q8_0": 0.53,
    "q5_0": 0.34,
    "q5_1": 0.38,
    "q4_0": 0.28,
    "q4_1": 0.31,
    "iq4_nl": 0.28,
}

_ratio = s.union(s.number(0, 1), s.literal("max", "off"))
_split_config = s.obj(
    {
        "strategy": s.literal("evenly", "priorityOrder", "tensor", "custom"),
        "disabledGpus": s.array(s.integer(0)),
        "priority": s.array(s.integer(0)),
        "customRatio": s.array(s.number(0)),
    }
)


def _checkbox(inner: s.Check) -> s.Check:
    return s.obj({"checked": s.boolean, "value": inner})


def _cache_type_checkbox(value: Any) -> str | None:
    # lmstudio-python sends {"checked": true, "value": false} to mean "unset"; accept it.
    problem = _checkbox(s.union(s.literal(*_CACHE_TYPES), s.literal(False)))(value)
    return problem


_mlx_kv_quant = s.obj(
    {
        "enabled": s.boolean,
        "bits": s.literal(8, 6, 4, 3, 2),
        "groupSize": s.literal(32, 64, 128),
        "quantizedStart": s.integer(0),
    }
)


@dataclass(frozen=True)
class KeySpec:
    key: str
    check: s.Check
    default: Any  # None: computed (context length) or absent unless received


_GPU_SPLIT_DEFAULT = {"strategy": "evenly", "disabledGpus": [], "priority": [], "customRatio": []}
_LLM = "llm.load."
_LLAMA = "llm.load.llama."
_SPEC = "llm.load.llama.speculativeDecoding."

LLM_KEYS: tuple[KeySpec, ...] = (
    KeySpec(_LLM + "contextLength", s.integer(1), None),
    KeySpec(_LLAMA + "acceleration.offloadRatio", _ratio, "max"),
    KeySpec("load.gpuSplitConfig", _split_config, _GPU_SPLIT_DEFAULT),
    KeySpec(_LLM + "numCpuExpertLayersRatio", _ratio, "off"),
    KeySpec("load.gpuStrictVramCap", s.boolean, False),
    KeySpec(_LLM + "offloadKVCacheToGpu", s.boolean, True),
    KeySpec(_LLAMA + "flashAttention", s.boolean, False),
    KeySpec(_LLAMA + "evalBatchSize", s.integer(1), 2048),
    KeySpec(_LLAMA + "physicalBatchSize", s.integer(1), 512),
    KeySpec(_LLM + "seed", _checkbox(s.integer(-1)), {"checked": False, "value": -1}),
    KeySpec(_LLAMA + "ropeFrequencyBase", _checkbox(s.number(0)), {"checked": False, "value": 0}),
    KeySpec(_LLAMA + "ropeFrequencyScale", _checkbox(s.number(0)), {"checked": False, "value": 0}),
    KeySpec(_LLAMA + "keepModelInMemory", s.boolean, True),
    KeySpec(_LLAMA + "tryMmap", s.boolean, True),
    KeySpec(_LLAMA + "tryDirectIO", s.boolean, False),
    KeySpec(_LLAMA + "useFp16ForKVCache", s.boolean, True),
    KeySpec(
        _LLAMA + "kCacheQuantizationType", _cache_type_checkbox, {"checked": False, "value": "f16"}
    ),
    KeySpec(
        _LLAMA + "vCacheQuantizationType", _cache_type_checkbox, {"checked": False, "value": "f16"}
    ),
    KeySpec(_LLM + "numExperts", s.integer(0), 0),
    KeySpec(_LLM + "numParallelSessions", s.integer(1, 1023), 4),
    KeySpec(_LLM + "useUnifiedKvCache", s.boolean, True),
    KeySpec(_LLAMA + "contextCheckpoints", s.integer(0), 32),
    KeySpec(_LLAMA + "reasoningBudgetMessage", s.string, ""),
    KeySpec(_SPEC + "draftMtp", s.boolean, False),
    KeySpec(_SPEC + "draftSimple", s.boolean, False),
    KeySpec(_SPEC + "draftModel", s.string, ""),
    KeySpec(_SPEC + "draftMaxTokens", s.integer(0), 3),
    KeySpec(_SPEC + "draftMinTokens", s.integer(0), 0),
    KeySpec(_SPEC + "draftMinContinueProbability", s.number(0, 1), 0),
    KeySpec(_SPEC + "draftDflashSidecar", s.boolean, False),
    KeySpec(_SPEC + "draftDsparkSidecar", s.boolean, False),
    KeySpec(_SPEC + "draftMtpSidecar", s.boolean, False),
    KeySpec("llm.load.mlx.diskCache", s.boolean, True),
    KeySpec(
        "llm.load.mlx.kvCacheQuantization",
        _mlx_kv_quant,
        {"enabled": False, "bits": 8, "groupSize": 64, "quantizedStart": 5000},
    ),
    # Accepted and echoed back when sent, but not part of the default set.
    KeySpec(_LLM + "promptTemplate", s.obj({}), None),
)

_EMB = "embedding.load."
EMBEDDING_KEYS: tuple[KeySpec, ...] = (
    KeySpec(_EMB + "contextLength", s.integer(1), None),
    KeySpec(_EMB + "llama.acceleration.offloadRatio", _ratio, "max"),
    KeySpec("load.gpuSplitConfig", _split_config, _GPU_SPLIT_DEFAULT),
    KeySpec(
        _EMB + "llama.ropeFrequencyBase", _checkbox(s.number(0)), {"checked": False, "value": 0}
    ),
    KeySpec(
        _EMB + "llama.ropeFrequencyScale", _checkbox(s.number(0)), {"checked": False, "value": 0}
    ),
    KeySpec(_EMB + "llama.keepModelInMemory", s.boolean, True),
    KeySpec(_EMB + "llama.tryMmap", s.boolean, True),
    KeySpec(_EMB + "seed", _checkbox(s.integer(-1)), {"checked": False, "value": -1}),
    KeySpec(_EMB + "llama.evalBatchSize", s.integer(1), 2048),
)

_SPECS: dict[str, dict[str, KeySpec]] = {
    "llm": {spec.key: spec for spec in LLM_KEYS},
    "embedding": {spec.key: spec for spec in EMBEDDING_KEYS},
}


def collapse_stack(stack: dict[str, Any]) -> dict[str, Any]:
    """Collapse a (validated) KVConfigStack: later layers and later fields win."""
    result: dict[str, Any] = {}
    for layer in stack["layers"]:
        for field in layer["config"]["fields"]:
            if "value" in field:
                result[field["key"]] = field["value"]
    return result


def short_repr(value: Any, limit: int = 300) -> str:
    """``repr(value)`` cut to ``limit`` characters (a value nested too deeply for ``repr``
    is only named by its type)."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply>"
    return text if len(text) <= limit else text[:limit] + "…"


def context_key(domain: str) -> str:
    return f"{domain}.load.contextLength"


def _normalize(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
        return int(value)
    return value


def effective_config(
    domain: str, model: dict[str, Any], received: dict[str, Any]
) -> dict[str, Any]:
    """Defaults overlaid with the received known keys (unknown keys are ignored).

    Raises :class:`StandInError` naming the first key whose value is invalid.
    """
    specs = _SPECS[domain]
    max_ctx = int(model["maxContextLength"])
    default_ctx = DEFAULT_LLM_CONTEXT if domain == "llm" else DEFAULT_EMBEDDING_CONTEXT
    config: dict[str, Any] = {}
    for spec in specs.values():
        if spec.key == context_key(domain):
            config[spec.key] = min(max_ctx, default_ctx)
        elif spec.default is not None:
            config[spec.key] = spec.default
    for key, value in received.items():
        known = specs.get(key)
        if known is None:
            continue
        problem = known.check(value)
        if problem is not None:
            raise StandInError(
                f'Invalid value for load config key "{key}"',
                cause=f"{problem} (received {short_repr(value)})",
                suggestion="Check the value against LM Studio's load-config schema.",
            )
        if isinstance(value, dict) and "value" in value:
            value = {**value, "value": _normalize(value["value"])}
        config[key] = _normalize(value)
    ctx = config[context_key(domain)]
    if ctx > max_ctx:
        raise StandInError(
            f"Requested context length {ctx} exceeds the model's maximum of {max_ctx}",
            cause=f'"{model["modelKey"]}" supports at most {max_ctx} tokens of context '
            f'(key "{context_key(domain)}").',
            suggestion=f"Use a context length of at most {max_ctx}.",
        )
    return config


def config_fields(config: dict[str, Any]) -> dict[str, Any]:
    """A KVConfig object for ``getLoadConfig``."""
    return {"fields": [{"key": key, "value": value} for key, value in config.items()]}


@dataclass(frozen=True)
class MemoryEstimate:
    model_bytes: int
    context_bytes: int
    model_vram_bytes: int
    context_vram_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.context_bytes

    @property
    def total_vram_bytes(self) -> int:
        return self.model_vram_bytes + self.context_vram_bytes

    def to_wire(self) -> dict[str, Any]:
        return {
            "confidence": "high",
            "modelVramBytes": self.model_vram_bytes,
            "contextVramBytes": self.context_vram_bytes,
            "totalVramBytes": self.total_vram_bytes,
            "modelBytes": self.model_bytes,
            "contextBytes": self.context_bytes,
            "totalBytes": self.total_bytes,
        }


def _offload_fraction(value: Any) -> float:
    if value == "max":
        return 1.0
    if value == "off":
        return 0.0
    return float(value)


def _cache_factor(config: dict[str, Any], domain: str) -> float:
    if domain != "llm":
        return 1.0
    factors = []
    for which in ("k", "v"):
        setting = config.get(f"{_LLAMA}{which}CacheQuantizationType")
        name = "f16"
        if (
            isinstance(setting, dict)
            and setting.get("checked")
            and isinstance(setting.get("value"), str)
        ):
            name = setting["value"]
        factors.append(_CACHE_FACTOR.get(name, 1.0))
    return sum(factors) / 2


def estimate_memory(domain: str, model: dict[str, Any], config: dict[str, Any]) -> MemoryEstimate:
    """The simulated memory formula (documented in docs/stand-in.md)."""
    size = int(model["sizeBytes"])
    ctx = int(config[context_key(domain)])
    per_token = math.ceil(size / KV_DIVISOR) * _cache_factor(config, domain)
    context_bytes = math.ceil(ctx * per_token)
    offload = _offload_fraction(config.get(f"{domain}.load.llama.acceleration.offloadRatio", "max"))
    model_vram = math.floor(size * offload)
    kv_on_gpu = domain != "llm" or bool(config.get(_LLM + "offloadKVCacheToGpu", True))
    context_vram = context_bytes if (offload > 0 and kv_on_gpu) else 0
    return MemoryEstimate(size, context_bytes, model_vram, context_vram)


# --- prediction config (llm.prediction.*) -------------------------------------------------
# Value checks from lmstudio-js packages/lms-kv-config/src/schema.ts
# (llmPredictionConfigSchematics): "numeric" / "checkboxNumeric" fields with min / max / int.

_PRED = "llm.prediction."


def _checkbox_or_false(inner: s.Check) -> s.Check:
    # lmstudio-python sends {"checked": true, "value": false} for "disabled"; accept it.
    return _checkbox(s.union(inner, s.literal(False)))


_structured = s.obj(
    {"type": s.literal("none", "json", "gbnf")},
    {"jsonSchema": lambda v: None, "gbnfGrammar": s.string},
)
_prompt_template = s.obj(
    {"type": s.literal("manual", "jinja"), "stopStrings": s.array(s.string)},
    {
        "manualPromptTemplate": s.obj({}),
        "jinjaPromptTemplate": s.obj({"template": s.string}),
    },
)
_reasoning_parsing = s.obj({"enabled": s.boolean, "startString": s.string, "endString": s.string})

# maxPredictedTokens: checkboxNumeric {min: 1, int: true}. One tolerance beyond the schema: an
# unchecked box with any integer, which the stand-in's HTTP layer sends for max_tokens -1
# ({"checked": false, "value": -1}); no official SDK sends it (the JS SDK writes maxTokens
# false as {"checked": false, "value": 1}).
_max_predicted_tokens = s.union(
    _checkbox_or_false(s.integer(1)), s.obj({"checked": s.literal(False), "value": s.integer()})
)

PREDICTION_KEYS: tuple[KeySpec, ...] = (
    KeySpec(_PRED + "temperature", s.number(0), 0.8),
    KeySpec(_PRED + "maxPredictedTokens", _max_predicted_tokens, {"checked": False, "value": 1000}),
    KeySpec(_PRED + "stopStrings", s.array(s.string), []),
    KeySpec(_PRED + "toolCallStopStrings", s.array(s.string), []),
    KeySpec(
        _PRED + "contextOverflowPolicy",
        s.literal("stopAtLimit", "truncateMiddle", "rollingWindow"),
        "truncateMiddle",
    ),
    KeySpec(_PRED + "structured", _structured, {"type": "none"}),
    KeySpec(_PRED + "tools", s.obj({"type": s.literal("none", "toolArray")}), {"type": "none"}),
    KeySpec(_PRED + "topKSampling", s.integer(-1, 500), 40),
    KeySpec(
        _PRED + "topPSampling", _checkbox_or_false(s.number(0, 1)), {"checked": True, "value": 0.95}
    ),
    KeySpec(
        _PRED + "minPSampling", _checkbox_or_false(s.number(0, 1)), {"checked": True, "value": 0.05}
    ),
    KeySpec(
        _PRED + "repeatPenalty", _checkbox_or_false(s.number(-1)), {"checked": True, "value": 1.1}
    ),
    KeySpec(_PRED + "llama.cpuThreads", s.integer(1), 4),
    KeySpec(
        _PRED + "reasoning.parsing",
        _reasoning_parsing,
        {"enabled": True, "startString": "<think>", "endString": "</think>"},
    ),
    # The default is the model's built-in template (filled in by the caller).
    KeySpec(_PRED + "promptTemplate", _prompt_template, None),
    KeySpec(_PRED + "speculativeDecoding.draftModel", s.string, None),
    KeySpec(_PRED + "speculativeDecoding.numDraftTokensExact", s.integer(1), None),
    KeySpec(_PRED + "speculativeDecoding.minDraftLengthToConsider", s.integer(0), None),
    KeySpec(_PRED + "speculativeDecoding.minContinueDraftingProbability", s.number(0, 1), None),
)
_PREDICTION_SPECS = {spec.key: spec for spec in PREDICTION_KEYS}


def prediction_config(received: dict[str, Any], default_template: Any) -> dict[str, Any]:
    """The effective prediction config: defaults overlaid with the received keys.

    Known ``llm.prediction.*`` keys are validated (raising :class:`StandInError` naming the
    first bad key); unknown ``llm.prediction.*`` keys are kept as sent; other keys are ignored.
    """
    config: dict[str, Any] = {}
    for spec in PREDICTION_KEYS:
        if spec.key == _PRED + "promptTemplate":
            config[spec.key] = default_template
        elif spec.default is not None:
            config[spec.key] = spec.default
    for key, value in received.items():
        if not key.startswith(_PRED):
            continue
        known = _PREDICTION_SPECS.get(key)
        if known is not None:
            problem = known.check(value)
            if problem is not None:
                raise StandInError(
                    f'Invalid value for prediction config key "{key}"',
                    cause=f"{problem} (received {short_repr(value)})",
                    suggestion="Check the value against LM Studio's prediction-config schema.",
                )
        config[key] = value
    return config
