"""Typed load configurations for LLMs and embedding models.

Every field defaults to ``None``, meaning *not set: the server decides*; only
fields you set are sent. Values are checked when the config is constructed,
and a bad value raises :class:`~lmstudio_async.errors.ConfigError` naming the
field::

    >>> LlmLoadConfig(context_length=8192, gpu_offload="max", seed=42)
    LlmLoadConfig(context_length=8192, gpu_offload='max', ..., seed=42, ...)

GPU split: ``main_gpu``, ``split_strategy`` and ``disabled_gpus`` travel
together in one server setting (``load.gpuSplitConfig``). When any of them is
set, the other two are filled in at construction with the values that will
actually be sent (``split_strategy="evenly"``, ``disabled_gpus=()``), so the
config always shows exactly what the server receives.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, TypeAlias, get_args

import msgspec
import msgspec.structs

from lmstudio_async.errors import ConfigError

__all__ = [
    "CacheQuantization",
    "ContextLength",
    "EmbeddingLoadConfig",
    "GpuOffload",
    "LlmLoadConfig",
    "LoadConfig",
    "SplitStrategy",
]

ContextLength: TypeAlias = int | Literal["max"]
"""A context window in tokens (> 0), or ``"max"``: the largest the model supports (its
``max_context_length``, which the client looks up before it loads)."""

GpuOffload: TypeAlias = float | Literal["max", "off"]
"""Share of the model to offload to the GPU: a ratio in ``[0, 1]``, or
``"max"`` (as much as possible) or ``"off"`` (CPU only)."""

SplitStrategy: TypeAlias = Literal["evenly", "favor_main_gpu"]
"""How to split a model across several GPUs."""

CacheQuantization: TypeAlias = Literal[
    "f32", "f16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"
]
"""Data type of the llama.cpp K/V cache."""

_CACHE_TYPES: tuple[str, ...] = get_args(CacheQuantization)
_SPLIT_STRATEGIES: tuple[str, ...] = get_args(SplitStrategy)
_GPU_SPLIT_FIELDS = ("main_gpu", "split_strategy", "disabled_gpus")


def _got(value: Any) -> str:
    if is_number(value):
        return repr(value)
    return f"{value!r} ({type(value).__name__})"


def is_sequence(value: object) -> bool:
    """A list, tuple or other sequence of items; not a string or bytes (one value)."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def suggest_field(key: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` to ``key`` (also as snake_case)."""
    valid = list(valid)
    matches = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not matches:
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        matches = difflib.get_close_matches(snake, valid, n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


class _CheckedStructMeta(msgspec.StructMeta):
    """Turns a bad constructor call into :class:`ConfigError` before msgspec sees it.

    msgspec Structs take no custom ``__init__``, so the metaclass's ``__call__`` checks
    the keyword names first: an unknown one gets the same "did you mean" hint as the dict
    form, and positional arguments (the configs are keyword-only) are refused by name.
    Decoding (``msgspec.convert``, JSON) does not call this and keeps msgspec's own checks.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise ConfigError(
                f"{cls.__name__} takes keyword arguments only, got {len(args)} positional"
            )
        fields: tuple[str, ...] = cls.__struct_fields__
        for key in kwargs:
            if key not in fields:
                raise cls._unknown_field(key)  # type: ignore[attr-defined]
        return super().__call__(**kwargs)


class ConfigBase(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    repr_omit_defaults=True,
    metaclass=_CheckedStructMeta,
):
    """Shared behaviour of the config Structs (load configs and the prediction config)."""

    domain: ClassVar[Literal["llm", "embedding"]]
    _kind: ClassVar[str] = "load config"

    @classmethod
    def _unknown_field(cls, key: str) -> ConfigError:
        hint = suggest_field(key, cls.__struct_fields__)
        where = f" for {cls.domain} models" if cls._kind == "load config" else ""
        if not hint and cls is EmbeddingLoadConfig and key in LlmLoadConfig.__struct_fields__:
            hint = " (it only applies to llm models)"
        return ConfigError(f"unknown {cls._kind} field {key!r}{where}{hint}", field=key)

    def _fail(self, field: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(
            f"{type(self).__name__}.{field}: expected {expected}, got {_got(value)}",
            field=field,
        )

    def _check_int(self, field: str, minimum: int, maximum: int | None = None) -> None:
        value = getattr(self, field)
        if value is None:
            return
        ok = is_int(value) and value >= minimum and (maximum is None or value <= maximum)
        if not ok:
            if maximum is not None:
                expected = f"int in [{minimum}, {maximum}]"
            elif minimum == 1:
                expected = "int > 0"
            else:
                expected = f"int >= {minimum}"
            raise self._fail(field, expected, value)

    def _check_number(self, field: str, minimum: float) -> None:
        value = getattr(self, field)
        if value is None:
            return
        if not (is_number(value) and math.isfinite(value) and value >= minimum):
            raise self._fail(field, f"finite number >= {minimum:g}", value)

    def _check_bool(self, field: str) -> None:
        value = getattr(self, field)
        if value is not None and not isinstance(value, bool):
            raise self._fail(field, "bool", value)

    def _check_choice(self, field: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, field)
        if value is not None and value not in choices:
            raise self._fail(field, "one of " + ", ".join(repr(c) for c in choices), value)

    def _check_common(self) -> None:
        length = getattr(self, "context_length", None)
        if length is not None and length != "max" and not (is_int(length) and length >= 1):
            raise self._fail("context_length", "int > 0 or 'max'", length)
        offload = getattr(self, "gpu_offload", None)
        if offload not in (None, "max", "off") and not (
            is_number(offload) and 0.0 <= offload <= 1.0
        ):
            raise self._fail("gpu_offload", "a ratio in [0, 1], 'max' or 'off'", offload)
        self._check_int("main_gpu", 0)
        self._check_choice("split_strategy", _SPLIT_STRATEGIES)
        disabled = getattr(self, "disabled_gpus", None)
        if disabled is not None:
            if is_sequence(disabled) and not isinstance(disabled, tuple):
                disabled = tuple(disabled)
                msgspec.structs.force_setattr(self, "disabled_gpus", disabled)
            if not (isinstance(disabled, tuple) and all(is_int(g) and g >= 0 for g in disabled)):
                raise self._fail("disabled_gpus", "a list of GPU indices (int >= 0)", disabled)
        self._check_number("rope_frequency_base", 0.0)
        self._check_number("rope_frequency_scale", 0.0)
        self._check_bool("keep_model_in_memory")
        self._check_bool("try_mmap")
        self._check_int("seed", -1)
        self._check_int("eval_batch_size", 1)
        # The GPU split settings are sent as one object: make the implied parts explicit.
        if any(getattr(self, f) is not None for f in _GPU_SPLIT_FIELDS):
            if getattr(self, "split_strategy", None) is None:
                msgspec.structs.force_setattr(self, "split_strategy", "evenly")
            if getattr(self, "disabled_gpus", None) is None:
                msgspec.structs.force_setattr(self, "disabled_gpus", ())

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set (not ``None``), by their snake_case names."""
        return {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not None
        }


class LlmLoadConfig(
    ConfigBase, frozen=True, kw_only=True, forbid_unknown_fields=True, repr_omit_defaults=True
):
    """How to load an LLM. Unset (``None``) fields are left to the server."""

    domain: ClassVar[Literal["llm", "embedding"]] = "llm"

    context_length: ContextLength | None = None
    """Context window in tokens (> 0), or ``"max"``: the largest the model supports."""
    gpu_offload: GpuOffload | None = None
    """GPU offload: ratio in ``[0, 1]``, ``"max"`` or ``"off"``."""
    main_gpu: int | None = None
    """Index of the main GPU (>= 0)."""
    split_strategy: SplitStrategy | None = None
    """``"evenly"`` or ``"favor_main_gpu"`` (multi-GPU split)."""
    disabled_gpus: Sequence[int] | None = None
    """Indices of GPUs not to use."""
    gpu_strict_vram_cap: bool | None = None
    """Never spill model weights from VRAM into shared memory."""
    offload_kv_cache_to_gpu: bool | None = None
    """Keep the KV cache in GPU memory."""
    flash_attention: bool | None = None
    """Use Flash Attention."""
    eval_batch_size: int | None = None
    """Prompt-processing batch size (>= 1)."""
    seed: int | None = None
    """Random seed (>= -1; -1 means random)."""
    rope_frequency_base: float | None = None
    """RoPE frequency base (>= 0)."""
    rope_frequency_scale: float | None = None
    """RoPE frequency scale (>= 0)."""
    keep_model_in_memory: bool | None = None
    """Keep the model in system memory even when offloaded to the GPU."""
    try_mmap: bool | None = None
    """Memory-map the model file if possible."""
    use_fp16_for_kv_cache: bool | None = None
    """Store the KV cache as FP16."""
    k_cache_quantization: CacheQuantization | None = None
    """K-cache data type (llama.cpp)."""
    v_cache_quantization: CacheQuantization | None = None
    """V-cache data type (llama.cpp)."""
    num_experts: int | None = None
    """Number of experts to use for mixture-of-experts models (>= 0)."""
    max_parallel_predictions: int | None = None
    """Maximum number of predictions run in parallel (1..1023)."""

    def __post_init__(self) -> None:
        self._check_common()
        self._check_bool("gpu_strict_vram_cap")
        self._check_bool("offload_kv_cache_to_gpu")
        self._check_bool("flash_attention")
        self._check_bool("use_fp16_for_kv_cache")
        self._check_choice("k_cache_quantization", _CACHE_TYPES)
        self._check_choice("v_cache_quantization", _CACHE_TYPES)
        self._check_int("num_experts", 0)
        self._check_int("max_parallel_predictions", 1, 1023)


class EmbeddingLoadConfig(
    ConfigBase, frozen=True, kw_only=True, forbid_unknown_fields=True, repr_omit_defaults=True
):
    """How to load an embedding model. Unset (``None``) fields are left to the server."""

    domain: ClassVar[Literal["llm", "embedding"]] = "embedding"

    context_length: ContextLength | None = None
    """Context window in tokens (> 0), or ``"max"``: the largest the model supports."""
    gpu_offload: GpuOffload | None = None
    """GPU offload: ratio in ``[0, 1]``, ``"max"`` or ``"off"``."""
    main_gpu: int | None = None
    """Index of the main GPU (>= 0)."""
    split_strategy: SplitStrategy | None = None
    """``"evenly"`` or ``"favor_main_gpu"`` (multi-GPU split)."""
    disabled_gpus: Sequence[int] | None = None
    """Indices of GPUs not to use."""
    rope_frequency_base: float | None = None
    """RoPE frequency base (>= 0)."""
    rope_frequency_scale: float | None = None
    """RoPE frequency scale (>= 0)."""
    keep_model_in_memory: bool | None = None
    """Keep the model in system memory even when offloaded to the GPU."""
    try_mmap: bool | None = None
    """Memory-map the model file if possible."""
    seed: int | None = None
    """Random seed (>= -1; -1 means random)."""
    eval_batch_size: int | None = None
    """Batch size (>= 1)."""

    def __post_init__(self) -> None:
        self._check_common()


LoadConfig: TypeAlias = LlmLoadConfig | EmbeddingLoadConfig
"""A load config of either domain."""
