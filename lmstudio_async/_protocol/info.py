"""Typed model descriptions: downloaded models (``ModelInfo``), loaded
instances (``ModelInstanceInfo``) and memory estimates (protocol.md §6, §4.10).

All Structs are frozen, untracked by the garbage collector (``gc=False``: their
fields are strings, numbers, tuples of strings and other such Structs, so they can
never be part of a reference cycle; decoding a ``listLoaded`` answer is about 25%
faster and adds nothing for the collector to scan), use camelCase on the wire,
ignore unknown keys, and
give defaults to the fields that only current servers send (``publisher``,
``indexedModelIdentifier``, ``deviceIdentifier``, ``quantization``,
``variants``, ``selectedVariant``, ``ttlMs``, ``lastUsedTime``), so older LM
Studio releases decode too. The two domains are a tagged union on ``type``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias, TypeVar

import msgspec

from lmstudio_async.errors import LMStudioValueError, ProtocolError

__all__ = [
    "ESTIMATE_RESULT_DECODER",
    "INSTANCE_INFO_DECODER",
    "INSTANCE_INFO_LIST_DECODER",
    "MODEL_INFO_DECODER",
    "MODEL_INFO_LIST_DECODER",
    "EmbeddingModelInfo",
    "EmbeddingModelInstanceInfo",
    "EstimateResult",
    "LlmInfo",
    "LlmInstanceInfo",
    "MemoryEstimate",
    "ModelInfo",
    "ModelInstanceInfo",
    "Quantization",
    "decode_estimate_result",
    "decode_instance_info",
    "decode_instance_info_list",
    "decode_model_info",
    "decode_model_info_list",
    "encode_info",
    "resolve_model_key",
]


class Quantization(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """Quantization of a model file, e.g. ``Quantization(name="Q4_K_M", bits=4)``."""

    name: str
    bits: int | None = None


class _InfoBase(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    model_key: str
    """Key used to load the model."""
    format: str
    """File format: ``"gguf"``, ``"safetensors"``, ``"onnx"``, ``"ggml"``, ``"pte"``,
    ``"mlx_placeholder"`` or ``"torch_safetensors"`` (kept as a string so future
    formats still decode)."""
    display_name: str
    """Human-readable name."""
    path: str
    """Model path relative to the models directory (``<publisher>/<repo>/<file>``)."""
    size_bytes: int
    """Size on disk."""
    max_context_length: int
    """Largest context length the model supports."""
    publisher: str | None = None
    """Publisher, e.g. ``"lmstudio-community"`` (``None`` from older servers)."""
    indexed_model_identifier: str | None = None
    """Long, stable, path-like identifier (``None`` from older servers)."""
    device_identifier: str | None = None
    """LM Link remote device; ``None`` means local (or an older server)."""
    params_string: str | None = None
    """Parameter count as text, e.g. ``"7B"``."""
    architecture: str | None = None
    """Architecture name, e.g. ``"llama"``."""
    quantization: Quantization | None = None
    """Quantization, when known."""
    variants: tuple[str, ...] | None = None
    """Model keys of the model's variants, when known."""
    selected_variant: str | None = None
    """The variant used on load, when known."""


class LlmInfo(_InfoBase, frozen=True, kw_only=True, rename="camel", tag="llm", tag_field="type"):
    """A downloaded LLM."""

    vision: bool
    """Whether the model accepts images."""
    trained_for_tool_use: bool
    """Whether the model was trained for native tool use."""

    @property
    def type(self) -> Literal["llm"]:
        """The model domain: ``"llm"``."""
        return "llm"


class EmbeddingModelInfo(
    _InfoBase, frozen=True, kw_only=True, rename="camel", tag="embedding", tag_field="type"
):
    """A downloaded embedding model."""

    @property
    def type(self) -> Literal["embedding"]:
        """The model domain: ``"embedding"``."""
        return "embedding"


class _InstanceProperties:
    """Convenience properties shared by both instance-info Structs."""

    __slots__ = ()
    ttl_ms: int | float | None
    last_used_time: int | float | None
    device_identifier: str | None

    @property
    def device(self) -> str | None:
        """The LM Link device the instance is loaded on (``device_identifier``); ``None``
        means the local machine (or a server without LM Link)."""
        return self.device_identifier

    @property
    def ttl(self) -> float | None:
        """Idle time-to-live in seconds, or ``None`` for no TTL."""
        return None if self.ttl_ms is None else self.ttl_ms / 1000.0

    @property
    def last_used(self) -> datetime | None:
        """Time of last use as a UTC-aware datetime, or ``None``."""
        if self.last_used_time is None:
            return None
        return datetime.fromtimestamp(self.last_used_time / 1000.0, tz=UTC)


class LlmInstanceInfo(
    LlmInfo,
    _InstanceProperties,
    frozen=True,
    kw_only=True,
    rename="camel",
    tag="llm",
    tag_field="type",
):
    """A loaded LLM instance (also an :class:`LlmInfo`)."""

    identifier: str
    """User-facing instance identifier (unique among loaded instances)."""
    instance_reference: str
    """Internal, immutable, unique reference to this instance."""
    context_length: int
    """Context length the instance was loaded with."""
    ttl_ms: int | float | None = None
    """Idle time-to-live in milliseconds; ``None`` means it never expires."""
    last_used_time: int | float | None = None
    """Unix epoch milliseconds of the last use; ``None`` when unknown."""


class EmbeddingModelInstanceInfo(
    EmbeddingModelInfo,
    _InstanceProperties,
    frozen=True,
    kw_only=True,
    rename="camel",
    tag="embedding",
    tag_field="type",
):
    """A loaded embedding-model instance (also an :class:`EmbeddingModelInfo`)."""

    identifier: str
    """User-facing instance identifier (unique among loaded instances)."""
    instance_reference: str
    """Internal, immutable, unique reference to this instance."""
    context_length: int
    """Context length the instance was loaded with."""
    ttl_ms: int | float | None = None
    """Idle time-to-live in milliseconds; ``None`` means it never expires."""
    last_used_time: int | float | None = None
    """Unix epoch milliseconds of the last use; ``None`` when unknown."""


ModelInfo: TypeAlias = LlmInfo | EmbeddingModelInfo
"""A downloaded model of either domain."""
ModelInstanceInfo: TypeAlias = LlmInstanceInfo | EmbeddingModelInstanceInfo
"""A loaded model instance of either domain."""


class MemoryEstimate(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """Estimated memory use of a model load, in bytes (``total_* = model_* + context_*``)."""

    confidence: str
    """``"high"`` or ``"low"``."""
    model_vram_bytes: int
    context_vram_bytes: int
    total_vram_bytes: int
    model_bytes: int
    context_bytes: int
    total_bytes: int


class EstimateResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """Result of ``estimateModelUsage``."""

    memory: MemoryEstimate
    passes_guardrails: bool
    """Whether the load would pass LM Studio's resource guardrails."""

    @property
    def fits(self) -> bool:
        """Same as :attr:`passes_guardrails`."""
        return self.passes_guardrails

    @property
    def total_bytes(self) -> int:
        """Estimated total memory (``memory.total_bytes``)."""
        return self.memory.total_bytes


MODEL_INFO_DECODER: msgspec.json.Decoder[ModelInfo] = msgspec.json.Decoder(ModelInfo)
MODEL_INFO_LIST_DECODER: msgspec.json.Decoder[list[ModelInfo]] = msgspec.json.Decoder(
    list[ModelInfo]
)
INSTANCE_INFO_DECODER: msgspec.json.Decoder[ModelInstanceInfo] = msgspec.json.Decoder(
    ModelInstanceInfo
)
INSTANCE_INFO_LIST_DECODER: msgspec.json.Decoder[list[ModelInstanceInfo]] = msgspec.json.Decoder(
    list[ModelInstanceInfo]
)
class _WireMemoryEstimate(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    # LM Studio computes the estimate in JavaScript numbers: byte counts may arrive as floats.
    confidence: str
    model_vram_bytes: int | float
    context_vram_bytes: int | float
    total_vram_bytes: int | float
    model_bytes: int | float
    context_bytes: int | float
    total_bytes: int | float


class _WireEstimateResult(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    memory: _WireMemoryEstimate
    passes_guardrails: bool


ESTIMATE_RESULT_DECODER: msgspec.json.Decoder[_WireEstimateResult] = msgspec.json.Decoder(
    _WireEstimateResult
)

_KNOWN_TYPES = frozenset({"llm", "embedding"})


def _as_bytes(raw: bytes | str | msgspec.Raw) -> bytes | str:
    return bytes(raw) if isinstance(raw, msgspec.Raw) else raw


def _protocol_error(what: str, exc: Exception) -> ProtocolError:
    return ProtocolError(f"Could not decode {what} sent by the server: {exc}")


def decode_model_info(raw: bytes | str | msgspec.Raw) -> ModelInfo:
    """Decode one ``ModelInfo``; raises :class:`ProtocolError` if it is invalid."""
    try:
        return MODEL_INFO_DECODER.decode(_as_bytes(raw))
    except msgspec.DecodeError as exc:
        raise _protocol_error("model info", exc) from exc


def decode_model_info_list(raw: bytes | str | msgspec.Raw) -> list[ModelInfo]:
    """Decode a ``ModelInfo`` list (``listDownloadedModels``).

    Entries of domains this SDK does not know (e.g. ``"imageGen"``) are skipped;
    any other invalid entry raises :class:`ProtocolError`.
    """
    data = _as_bytes(raw)
    try:
        return MODEL_INFO_LIST_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        first_error = exc
    try:
        return [
            msgspec.convert(item, ModelInfo)
            for item in _known_items(data, "model info list", first_error)
        ]
    except msgspec.ValidationError as exc:
        raise _protocol_error("model info list", exc) from exc


def decode_instance_info(raw: bytes | str | msgspec.Raw) -> ModelInstanceInfo:
    """Decode one ``ModelInstanceInfo``; raises :class:`ProtocolError` if it is invalid."""
    try:
        return INSTANCE_INFO_DECODER.decode(_as_bytes(raw))
    except msgspec.DecodeError as exc:
        raise _protocol_error("model instance info", exc) from exc


def decode_instance_info_list(raw: bytes | str | msgspec.Raw) -> list[ModelInstanceInfo]:
    """Decode a ``ModelInstanceInfo`` list (``listLoaded``); entries of unknown
    domains are skipped, other invalid entries raise :class:`ProtocolError`."""
    data = _as_bytes(raw)
    try:
        return INSTANCE_INFO_LIST_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        first_error = exc
    try:
        return [
            msgspec.convert(item, ModelInstanceInfo)
            for item in _known_items(data, "model instance list", first_error)
        ]
    except msgspec.ValidationError as exc:
        raise _protocol_error("model instance list", exc) from exc


def _known_items(data: bytes | str, what: str, first_error: Exception) -> list[Any]:
    """Re-parse a list whose typed decode failed, keeping entries of known
    domains; raise ProtocolError unless unknown domains explain the failure."""
    try:
        items = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise _protocol_error(what, exc) from exc
    if not isinstance(items, list):
        raise _protocol_error(what, first_error) from first_error
    kept = [
        item
        for item in items
        if not (isinstance(item, Mapping) and item.get("type") not in _KNOWN_TYPES)
    ]
    if len(kept) == len(items):
        raise _protocol_error(what, first_error) from first_error
    return kept


def decode_estimate_result(raw: bytes | str | msgspec.Raw) -> EstimateResult:
    """Decode an ``estimateModelUsage`` result; raises :class:`ProtocolError` if invalid."""
    try:
        wire = ESTIMATE_RESULT_DECODER.decode(_as_bytes(raw))
    except msgspec.DecodeError as exc:
        raise _protocol_error("memory estimate", exc) from exc
    m = wire.memory
    memory = MemoryEstimate(
        confidence=m.confidence,
        model_vram_bytes=round(m.model_vram_bytes),
        context_vram_bytes=round(m.context_vram_bytes),
        total_vram_bytes=round(m.total_vram_bytes),
        model_bytes=round(m.model_bytes),
        context_bytes=round(m.context_bytes),
        total_bytes=round(m.total_bytes),
    )
    return EstimateResult(memory=memory, passes_guardrails=wire.passes_guardrails)


def encode_info(info: ModelInfo | ModelInstanceInfo | EstimateResult) -> bytes:
    """Encode an info Struct to its wire JSON (``type`` tag included)."""
    return msgspec.json.encode(info)


_InfoT = TypeVar("_InfoT", bound=_InfoBase)


def resolve_model_key(models: Sequence[_InfoT], key: str) -> _InfoT | None:
    """The downloaded model that ``key`` names, as LM Studio resolves a model to load: its
    model key, else its path or ``indexedModelIdentifier``, else the start of either (all
    case-insensitive). ``None`` if nothing matches (the server then reports the missing
    model); raises :class:`LMStudioValueError` naming the candidates if several models
    match and none exactly, rather than loading whichever comes first."""
    low = key.lower()

    def names(model: _InfoT) -> list[str]:
        return [n.lower() for n in (model.path, model.indexed_model_identifier) if n]

    for model in models:
        if model.model_key.lower() == low:
            return model
    for model in models:
        if low in names(model):
            return model
    matches = [m for m in models if any(n.startswith(low) for n in names(m))]
    if len(matches) > 1:
        keys = ", ".join(m.model_key for m in matches)
        raise LMStudioValueError(
            f"{key!r} matches {len(matches)} downloaded models: {keys}; give one of these keys"
        )
    return matches[0] if matches else None
