"""KV configs on the wire, and conversion to and from the typed load configs
(protocol.md §4.1, §7).

Mapping choices (all documented deviations from the official SDKs):

* Checkbox keys are written as ``{"checked": true, "value": v}`` for a set
  field and omitted for an unset one; reading, ``checked: false`` means unset.
* ``load.gpuSplitConfig`` is written only when ``main_gpu``,
  ``split_strategy`` or ``disabled_gpus`` is set (both official SDKs also
  write it when only the offload ratio is given; we leave the server's split
  alone then). ``priority`` is ``[main_gpu]`` whenever ``main_gpu`` is set,
  as the JS SDK does (the Python SDK sends it only with ``favor_main_gpu``);
  reading, ``priority[0]`` becomes ``main_gpu`` for either strategy. The
  ``tensor`` and ``custom`` strategies cannot be represented and are skipped.
* For embedding models ``gpu_offload`` is written to
  ``embedding.load.llama.acceleration.offloadRatio`` (as the Python SDK does;
  the JS SDK drops it).
* ``eval_batch_size`` and ``seed`` are supported for embedding models too
  (``embedding.load.llama.evalBatchSize``, ``embedding.load.seed``), which
  neither official SDK exposes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias, TypeVar, overload

import msgspec

from lmstudio_async.config import EmbeddingLoadConfig, LlmLoadConfig, LoadConfig, suggest_field
from lmstudio_async.errors import ConfigError, LMStudioValueError

__all__ = [
    "API_OVERRIDE_LAYER",
    "GPU_SPLIT_KEY",
    "KV_CONFIG_DECODER",
    "KV_CONFIG_STACK_DECODER",
    "Domain",
    "KvConfig",
    "KvConfigStack",
    "KvField",
    "KvLayer",
    "coerce_load_config",
    "collapse_stack",
    "config_class",
    "config_differences",
    "fields_to_load_config",
    "load_config_keys",
    "load_config_stack",
    "load_config_to_fields",
]

Domain: TypeAlias = Literal["llm", "embedding"]

API_OVERRIDE_LAYER = "apiOverride"
GPU_SPLIT_KEY = "load.gpuSplitConfig"


class KvField(msgspec.Struct, kw_only=True):
    """One entry of a KV config: a fully qualified dotted ``key`` and its value."""

    key: str
    value: Any = None


class KvConfig(msgspec.Struct, kw_only=True):
    """A flat KV config (``{"fields": [...]}``); ``getLoadConfig`` returns one."""

    fields: list[KvField] = msgspec.field(default_factory=list)


class KvLayer(msgspec.Struct, kw_only=True, rename="camel"):
    """One named layer of a :class:`KvConfigStack`."""

    layer_name: str
    config: KvConfig


class KvConfigStack(msgspec.Struct, kw_only=True):
    """Layers of KV configs; later layers override earlier ones."""

    layers: list[KvLayer] = msgspec.field(default_factory=list)


KV_CONFIG_DECODER: msgspec.json.Decoder[KvConfig] = msgspec.json.Decoder(KvConfig)
KV_CONFIG_STACK_DECODER: msgspec.json.Decoder[KvConfigStack] = msgspec.json.Decoder(KvConfigStack)

# (client field, server key, is checkbox), in the order fields are written.
_LLM_KEYS: tuple[tuple[str, str, bool], ...] = (
    ("context_length", "llm.load.contextLength", False),
    ("gpu_offload", "llm.load.llama.acceleration.offloadRatio", False),
    ("gpu_strict_vram_cap", "load.gpuStrictVramCap", False),
    ("offload_kv_cache_to_gpu", "llm.load.offloadKVCacheToGpu", False),
    ("flash_attention", "llm.load.llama.flashAttention", False),
    ("eval_batch_size", "llm.load.llama.evalBatchSize", False),
    ("seed", "llm.load.seed", True),
    ("rope_frequency_base", "llm.load.llama.ropeFrequencyBase", True),
    ("rope_frequency_scale", "llm.load.llama.ropeFrequencyScale", True),
    ("keep_model_in_memory", "llm.load.llama.keepModelInMemory", False),
    ("try_mmap", "llm.load.llama.tryMmap", False),
    ("use_fp16_for_kv_cache", "llm.load.llama.useFp16ForKVCache", False),
    ("k_cache_quantization", "llm.load.llama.kCacheQuantizationType", True),
    ("v_cache_quantization", "llm.load.llama.vCacheQuantizationType", True),
    ("num_experts", "llm.load.numExperts", False),
    ("max_parallel_predictions", "llm.load.numParallelSessions", False),
)
_EMBEDDING_KEYS: tuple[tuple[str, str, bool], ...] = (
    ("context_length", "embedding.load.contextLength", False),
    ("gpu_offload", "embedding.load.llama.acceleration.offloadRatio", False),
    ("eval_batch_size", "embedding.load.llama.evalBatchSize", False),
    ("seed", "embedding.load.seed", True),
    ("rope_frequency_base", "embedding.load.llama.ropeFrequencyBase", True),
    ("rope_frequency_scale", "embedding.load.llama.ropeFrequencyScale", True),
    ("keep_model_in_memory", "embedding.load.llama.keepModelInMemory", False),
    ("try_mmap", "embedding.load.llama.tryMmap", False),
)
_KEYS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "llm": _LLM_KEYS,
    "embedding": _EMBEDDING_KEYS,
}
_CLASSES: dict[str, type[LlmLoadConfig] | type[EmbeddingLoadConfig]] = {
    "llm": LlmLoadConfig,
    "embedding": EmbeddingLoadConfig,
}
_GPU_SPLIT_FIELDS = ("main_gpu", "split_strategy", "disabled_gpus")


def _check_domain(domain: str) -> type[LlmLoadConfig] | type[EmbeddingLoadConfig]:
    try:
        return _CLASSES[domain]
    except KeyError:
        raise LMStudioValueError(
            f"unknown model domain {domain!r} (expected 'llm' or 'embedding')"
        ) from None


def config_class(domain: Domain) -> type[LlmLoadConfig] | type[EmbeddingLoadConfig]:
    """The load-config class for ``domain``."""
    return _check_domain(domain)


def load_config_keys(domain: Domain) -> dict[str, str]:
    """Client field name -> server KV key for ``domain`` (GPU split fields map
    to ``load.gpuSplitConfig``)."""
    _check_domain(domain)
    keys = {name: key for name, key, _ in _KEYS[domain]}
    keys.update(dict.fromkeys(_GPU_SPLIT_FIELDS, GPU_SPLIT_KEY))
    return keys


# ---------------------------------------------------------------------------
# User input -> typed config


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# Spellings used by the official SDKs that are not plain camelCase of our names.
_EXTRA_ALIASES = {
    "offloadKVCacheToGpu": "offload_kv_cache_to_gpu",
    "useFp16ForKVCache": "use_fp16_for_kv_cache",
    "llamaKCacheQuantizationType": "k_cache_quantization",
    "llamaVCacheQuantizationType": "v_cache_quantization",
    "llama_k_cache_quantization_type": "k_cache_quantization",
    "llama_v_cache_quantization_type": "v_cache_quantization",
    "kCacheQuantizationType": "k_cache_quantization",
    "vCacheQuantizationType": "v_cache_quantization",
}
_GPU_ALIASES = {
    "ratio": "gpu_offload",
    "main_gpu": "main_gpu",
    "mainGpu": "main_gpu",
    "split_strategy": "split_strategy",
    "splitStrategy": "split_strategy",
    "disabled_gpus": "disabled_gpus",
    "disabledGpus": "disabled_gpus",
}
_ALL_FIELDS = tuple(LlmLoadConfig.__struct_fields__)


def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    for name in _ALL_FIELDS:
        table[name] = name
        table[_camel(name)] = name
    table.update(_EXTRA_ALIASES)
    return table


_ALIASES = _aliases()


def _unknown_field(domain: str, key: str, valid: Iterable[str]) -> ConfigError:
    canonical = _ALIASES.get(key)
    if canonical is not None:
        # A real field, but not for this domain.
        return ConfigError(
            f"unknown load config field {key!r} for {domain} models "
            f"(it only applies to llm models)",
            field=key,
        )
    hint = suggest_field(key, valid)
    return ConfigError(f"unknown load config field {key!r} for {domain} models{hint}", field=key)


def _normalise_mapping(
    domain: str, cls: type[LoadConfig], config: Mapping[str, Any]
) -> dict[str, Any]:
    valid = cls.__struct_fields__
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def put(name: str, value: Any, spelled: str) -> None:
        if name not in valid:
            raise _unknown_field(domain, spelled, valid)
        if name in out:
            raise ConfigError(
                f"load config field {name!r} given twice (as {origin[name]!r} and {spelled!r})",
                field=name,
            )
        out[name] = value
        origin[name] = spelled

    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigError(f"load config keys must be strings, got {key!r}", field=None)
        if key == "gpu" and isinstance(value, Mapping):
            # The official SDKs' nested GPU settings.
            for sub, sub_value in value.items():
                name = _GPU_ALIASES.get(sub) if isinstance(sub, str) else None
                if name is None:
                    raise ConfigError(
                        f"unknown GPU setting {sub!r} in load config field 'gpu' "
                        f"(expected ratio, main_gpu, split_strategy or disabled_gpus)",
                        field=f"gpu.{sub}",
                    )
                if name == "split_strategy" and sub_value == "favorMainGpu":
                    sub_value = "favor_main_gpu"
                put(name, sub_value, f"gpu.{sub}")
            continue
        if key == "gpu":
            raise ConfigError(
                f"load config field 'gpu' must be a mapping of ratio, main_gpu, "
                f"split_strategy and disabled_gpus, got {value!r}; "
                f"for the offload ratio alone use 'gpu_offload'",
                field="gpu",
            )
        name = _ALIASES.get(key)
        if name is None:
            raise _unknown_field(domain, key, valid)
        put(name, value, key)
    return out


_PATH_RE = re.compile(r" - at `\$\.(\w+)")


@overload
def coerce_load_config(
    domain: Literal["llm"], config: LlmLoadConfig | Mapping[str, Any] | None
) -> LlmLoadConfig | None: ...
@overload
def coerce_load_config(
    domain: Literal["embedding"], config: EmbeddingLoadConfig | Mapping[str, Any] | None
) -> EmbeddingLoadConfig | None: ...
@overload
def coerce_load_config(domain: Domain, config: object) -> LoadConfig | None: ...
def coerce_load_config(domain: Domain, config: object) -> LoadConfig | None:
    """Validate a user-supplied load config for ``domain``.

    Accepts ``None`` (returned as is), a config Struct of the right domain
    (returned as is; the other domain's Struct raises :class:`ConfigError`),
    or a mapping of field names (anything else raises :class:`ConfigError`).
    Mapping keys may be our snake_case names, their
    camelCase spellings, or the official SDKs' names (``contextLength``,
    ``llamaKCacheQuantizationType``, ``offloadKVCacheToGpu``, and a nested
    ``gpu`` mapping with ``ratio`` / ``mainGpu`` / ``splitStrategy`` /
    ``disabledGpus``). Unknown, ill-typed or out-of-range fields raise
    :class:`ConfigError` naming the field, before anything is sent.
    """
    cls = _check_domain(domain)
    if config is None:
        return None
    if isinstance(config, LlmLoadConfig | EmbeddingLoadConfig):
        if not isinstance(config, cls):
            raise ConfigError(
                f"{type(config).__name__} given for "
                f"{'an LLM' if domain == 'llm' else 'an embedding model'}; use {cls.__name__}",
                field=None,
            )
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"load config must be {cls.__name__}, a mapping or None, got {type(config).__name__}",
            field=None,
        )
    return convert_config(_normalise_mapping(domain, cls, config), cls)


_ConfigT = TypeVar("_ConfigT", bound=msgspec.Struct)


def convert_config(values: Mapping[str, Any], cls: type[_ConfigT]) -> _ConfigT:
    """Build config Struct ``cls`` from normalised snake_case ``values``.

    Every failure becomes a :class:`ConfigError` naming the field: the Struct's own
    range checks when they apply (their message is clearer), else msgspec's type error.
    """
    try:
        return msgspec.convert(values, cls)
    except msgspec.ValidationError as exc:
        if isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None
        match = _PATH_RE.search(str(exc))
        field = match.group(1) if match else None
        if field is not None and field in values:
            try:
                cls(**{field: values[field]})  # our own checks give the clearer message
            except ConfigError as own:
                raise own from None
            detail = str(exc).split(" - at ", 1)[0]
            raise ConfigError(
                f"{cls.__name__}.{field}: {detail[:1].lower()}{detail[1:]}, got {values[field]!r}",
                field=field,
            ) from None
        raise ConfigError(f"invalid {cls.__name__}: {exc}", field=field) from None


# ---------------------------------------------------------------------------
# Typed config -> wire


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_config_to_fields(
    domain: Domain, config: LoadConfig | Mapping[str, Any] | None
) -> list[KvField]:
    """The KV fields for the set fields of ``config`` (after :func:`coerce_load_config`)."""
    coerced = coerce_load_config(domain, config)
    if coerced is None:
        return []
    fields: list[KvField] = []
    for name, key, checkbox in _KEYS[domain]:
        value = getattr(coerced, name)
        if value is None:
            continue
        if name == "context_length" and value == "max":
            # The client's load calls put the model's max_context_length in its place.
            raise ConfigError(
                "context_length='max' names no length until the model is known: pass the "
                "config to a load call (load, model, estimate, a pool), which looks it up",
                field="context_length",
            )
        fields.append(
            KvField(key=key, value={"checked": True, "value": value} if checkbox else value)
        )
    if any(getattr(coerced, f) is not None for f in _GPU_SPLIT_FIELDS):
        main_gpu = coerced.main_gpu
        strategy = "priorityOrder" if coerced.split_strategy == "favor_main_gpu" else "evenly"
        fields.append(
            KvField(
                key=GPU_SPLIT_KEY,
                value={
                    "strategy": strategy,
                    "disabledGpus": list(coerced.disabled_gpus or ()),
                    "priority": [main_gpu] if main_gpu is not None else [],
                    "customRatio": [],
                },
            )
        )
    return fields


def load_config_stack(
    domain: Domain, config: LoadConfig | Mapping[str, Any] | None
) -> dict[str, Any]:
    """The wire ``loadConfigStack``: exactly one ``apiOverride`` layer (possibly
    empty), as a plain JSON-able dict."""
    fields = load_config_to_fields(domain, config)
    return {
        "layers": [
            {
                "layerName": API_OVERRIDE_LAYER,
                "config": {"fields": [{"key": f.key, "value": _plain(f.value)} for f in fields]},
            }
        ]
    }


# ---------------------------------------------------------------------------
# Wire -> typed config


def _iter_fields(fields: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(fields, KvConfig):
        fields = fields.fields
    elif isinstance(fields, Mapping):
        fields = fields.get("fields", ())
    if not isinstance(fields, Iterable) or isinstance(fields, str | bytes):
        return
    for item in fields:
        if isinstance(item, KvField):
            yield item.key, item.value
        elif isinstance(item, Mapping) and isinstance(item.get("key"), str):
            yield item["key"], item.get("value")


def _read_checkbox(value: Any) -> tuple[bool, Any]:
    """(usable, inner value) for a checkbox wire value; inner None = unchecked."""
    if not isinstance(value, Mapping) or not isinstance(value.get("checked"), bool):
        return False, None
    if not value["checked"]:
        return True, None
    if "value" not in value or value["value"] is None:
        return False, None
    return True, value["value"]


def _read_gpu_split(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    strategy = value.get("strategy")
    if strategy == "evenly":
        split = "evenly"
    elif strategy == "priorityOrder":
        split = "favor_main_gpu"
    else:
        return None  # tensor / custom / garbage: not representable
    disabled = value.get("disabledGpus", [])
    priority = value.get("priority", [])
    if not isinstance(disabled, list) or not isinstance(priority, list):
        return None
    out: dict[str, Any] = {"split_strategy": split, "disabled_gpus": disabled}
    if priority:
        out["main_gpu"] = priority[0]
    return out


def _accepts(cls: type[LoadConfig], values: dict[str, Any]) -> dict[str, Any] | None:
    """``values`` converted to the field types, or None if any is invalid."""
    try:
        return msgspec.structs.asdict(msgspec.convert(values, cls))
    except (msgspec.ValidationError, ConfigError):
        return None


_FieldsInput: TypeAlias = KvConfig | Mapping[str, Any] | Iterable[Any]


@overload
def fields_to_load_config(domain: Literal["llm"], fields: _FieldsInput) -> LlmLoadConfig: ...
@overload
def fields_to_load_config(
    domain: Literal["embedding"], fields: _FieldsInput
) -> EmbeddingLoadConfig: ...
@overload
def fields_to_load_config(domain: Domain, fields: _FieldsInput) -> LoadConfig: ...
def fields_to_load_config(domain: Domain, fields: _FieldsInput) -> LoadConfig:
    """Map KV fields (e.g. a ``getLoadConfig`` result) back to a typed config.

    Accepts a :class:`KvConfig`, a ``{"fields": [...]}`` mapping, or an iterable
    of :class:`KvField` / ``{"key", "value"}`` dicts. Later duplicates win.
    Unknown keys are skipped; so are values that are malformed or out of range
    (the field stays ``None``, never a guessed value). An unchecked checkbox
    gives ``None``.
    """
    cls = _check_domain(domain)
    by_key = {key: name for name, key, _ in _KEYS[domain]}
    checkbox_keys = {key for _, key, cb in _KEYS[domain] if cb}
    collapsed: dict[str, Any] = {}
    for key, value in _iter_fields(fields):
        collapsed[key] = value
    values: dict[str, Any] = {}
    for key, raw in collapsed.items():
        if key == GPU_SPLIT_KEY:
            split = _read_gpu_split(raw)
            if split is not None:
                accepted = _accepts(cls, split)
                if accepted is not None:
                    values.update({f: accepted[f] for f in split})
            continue
        name = by_key.get(key)
        if name is None:
            continue
        if key in checkbox_keys:
            usable, inner = _read_checkbox(raw)
            if not usable or inner is None:
                continue
            raw = inner
        if raw is None:
            continue
        accepted = _accepts(cls, {name: raw})
        if accepted is not None:
            values[name] = accepted[name]
    return msgspec.convert(values, cls)


def collapse_stack(stack: KvConfigStack | Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a KV config stack to ``{key: value}``; later layers and later
    fields override earlier ones. Malformed entries are skipped."""
    result: dict[str, Any] = {}
    if isinstance(stack, KvConfigStack):
        for layer in stack.layers:
            for f in layer.config.fields:
                result[f.key] = f.value
        return result
    layers = stack.get("layers") if isinstance(stack, Mapping) else None
    if not isinstance(layers, list):
        return result
    for layer in layers:
        if isinstance(layer, KvLayer):
            config: Any = layer.config
        elif isinstance(layer, Mapping):
            config = layer.get("config")
        else:
            continue
        for key, value in _iter_fields(config):
            result[key] = value
    return result


# ---------------------------------------------------------------------------
# Comparison


def _same(a: Any, b: Any) -> bool:
    if (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) or a == b
    return bool(a == b)


def config_differences(
    requested: LoadConfig, effective: LoadConfig, *, ignore_missing: bool = False
) -> dict[str, tuple[Any, Any]]:
    """Fields set in ``requested`` whose value in ``effective`` differs:
    ``{field: (requested_value, effective_value)}``.

    An effective value of ``None`` (the server did not report the setting, or
    reported a checkbox as unchecked) counts as a difference unless
    ``ignore_missing`` is true.
    """
    if type(requested) is not type(effective):
        raise ConfigError(
            f"cannot compare {type(requested).__name__} with {type(effective).__name__}",
            field=None,
        )
    diffs: dict[str, tuple[Any, Any]] = {}
    for name, wanted in requested.to_dict().items():
        actual = getattr(effective, name)
        if actual is None and ignore_missing:
            continue
        if not _same(wanted, actual):
            diffs[name] = (wanted, actual)
    return diffs
