"""Payloads of the model-management endpoints (protocol.md §4, §5).

Typed packets of the ``loadModel`` and ``getOrLoad`` channels, decoded straight
from the raw channel message bytes, and validation of the strings and numbers
the client puts into requests. Everything here is pure: no I/O.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any, TypeAlias

import msgspec

from ..errors import LMStudioValueError
from .info import ModelInfo, ModelInstanceInfo

__all__ = [
    "LOAD_PACKET_DECODER",
    "AlreadyLoaded",
    "LoadPacket",
    "LoadProgress",
    "LoadSuccess",
    "Progress",
    "Resolved",
    "StartLoading",
    "Success",
    "UnloadingOtherJitModel",
    "check_key",
    "identifier_query",
    "instance_specifier",
    "ttl_ms",
    "unload_param",
]


class _Packet(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    pass


class Resolved(_Packet, tag="resolved"):
    """``loadModel``: the key resolved to a downloaded model."""

    info: ModelInfo
    ambiguous: list[str] | None = None


class Progress(_Packet, tag="progress"):
    """``loadModel``: load progress in [0, 1]."""

    progress: float


class Success(_Packet, tag="success"):
    """``loadModel``: terminal packet with the new instance."""

    info: ModelInstanceInfo


class AlreadyLoaded(_Packet, tag="alreadyLoaded"):
    """``getOrLoad``: an instance matched; nothing is loaded."""

    info: ModelInstanceInfo


class StartLoading(_Packet, tag="startLoading"):
    """``getOrLoad``: nothing matched, a JIT load starts."""

    identifier: str
    info: ModelInfo


class UnloadingOtherJitModel(_Packet, tag="unloadingOtherJITModel"):
    """``getOrLoad``: another JIT instance is being evicted."""

    info: ModelInstanceInfo


class LoadProgress(_Packet, tag="loadProgress"):
    """``getOrLoad``: load progress in [0, 1]."""

    progress: float


class LoadSuccess(_Packet, tag="loadSuccess"):
    """``getOrLoad``: terminal packet with the new instance."""

    info: ModelInstanceInfo


LoadPacket: TypeAlias = (
    Resolved
    | Progress
    | Success
    | AlreadyLoaded
    | StartLoading
    | UnloadingOtherJitModel
    | LoadProgress
    | LoadSuccess
)
LOAD_PACKET_DECODER: msgspec.json.Decoder[LoadPacket] = msgspec.json.Decoder(LoadPacket)


def check_key(value: object, what: str) -> str:
    """Validate a model key / identifier / path as LM Studio's ``reasonableKeyString``.

    1 to 1024 characters, not ``__proto__``, no control characters; otherwise
    the server would drop the request with only a warning (a hang). Not only
    whitespace either: no model has such a key or identifier, and the CLI and
    ``preset=`` refuse it too. Inner spaces are fine (LM Studio allows them).
    """
    if not isinstance(value, str):
        raise LMStudioValueError(f"{what} must be a string, got {type(value).__name__}")
    if not any(ch.isprintable() and not ch.isspace() for ch in value):
        # (nothing visible: also a lone zero-width space or joiner, which strip() keeps)
        raise LMStudioValueError(f"{what} must not be empty or only whitespace, got {value!r}")
    if len(value) > 1024:
        raise LMStudioValueError(f"{what} is {len(value)} characters long; the limit is 1024")
    if value == "__proto__":
        raise LMStudioValueError(f"{what} must not be '__proto__'")
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise LMStudioValueError(f"{what} {value!r} contains the control character {ch!r}")
    return value


def ttl_ms(ttl: object) -> int | None:
    """Seconds (or ``None`` for no TTL) to the wire's integer milliseconds (>= 1)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise LMStudioValueError(
            f"ttl must be a number of seconds or None, got {type(ttl).__name__}"
        )
    if not math.isfinite(ttl) or ttl <= 0:
        raise LMStudioValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    ms = round(ttl * 1000)
    if ms < 1:
        # The wire counts whole milliseconds: this would be a TTL of 0, which LM Studio refuses.
        raise LMStudioValueError(
            f"ttl must be at least 0.001 s (it is sent in whole milliseconds), got {ttl!r}"
        )
    return int(ms)


def identifier_query(identifier: str) -> dict[str, Any]:
    """A ``ModelSpecifier`` selecting whatever instance currently has ``identifier``."""
    return {"type": "query", "query": {"identifier": identifier}}


def unload_param(identifier: str, device: str | None, *, exact: bool) -> dict[str, Any]:
    """Parameter of ``unloadModel``. ``exact``: ``device`` is where the instance is, ``None``
    the local machine, and only there is it unloaded (``deviceIdentifier: null``, as the JS
    SDK's handles send). Otherwise ``None`` leaves LM Studio to look on the preferred
    device, then the local one, then the other LM Link devices."""
    param: dict[str, Any] = {"identifier": identifier}
    if device is not None or exact:
        param["deviceIdentifier"] = device
    return param


def instance_specifier(instance_reference: str) -> dict[str, Any]:
    """A ``ModelSpecifier`` tied to one specific instance (stale once it is unloaded)."""
    return {"type": "instanceReference", "instanceReference": instance_reference}
