"""The server's error payload (``SerializedLMSExtendedError``) and its mapping
to :class:`~lmstudio_async.errors.ServerError` (protocol.md §3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from lmstudio_async.errors import ModelNotFoundError, ServerError, scrub

__all__ = [
    "MALFORMED_ERROR_TITLE",
    "MODEL_NOT_FOUND_CODES",
    "SerializedError",
    "decode_serialized_error",
    "map_server_error",
]

#: ``displayData.code`` values reported as :class:`ModelNotFoundError`.
MODEL_NOT_FOUND_CODES: frozenset[str] = frozenset(
    {
        "generic.noModelMatchingQuery",
        "generic.pathNotFound",
        "generic.identifierNotFound",
        "generic.specificModelUnloaded",
    }
)

#: Title used when the server's error payload cannot be understood at all.
MALFORMED_ERROR_TITLE = "Malformed server error"


class SerializedError(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """The wire form of a server error. Every field is optional.

    Decode it with :func:`decode_serialized_error`, which never raises.
    """

    title: str | None = None
    root_title: str | None = None
    cause: str | None = None
    suggestion: str | None = None
    error_data: dict[str, Any] | None = None
    display_data: dict[str, Any] | None = None
    stack: str | None = None


_STR_FIELDS = {
    "title": "title",
    "rootTitle": "root_title",
    "cause": "cause",
    "suggestion": "suggestion",
    "stack": "stack",
}
_DICT_FIELDS = {"errorData": "error_data", "displayData": "display_data"}


def decode_serialized_error(
    raw: bytes | str | msgspec.Raw | Mapping[str, Any] | None,
) -> SerializedError:
    """Decode a server error payload leniently; never raises.

    Unknown keys are ignored and fields of the wrong type are dropped (as the
    JS client does). A payload that is not a JSON object at all becomes a
    :class:`SerializedError` titled ``"Malformed server error"`` with the
    payload's text as ``cause``; a bare JSON string becomes the title.
    """
    data: Any
    if isinstance(raw, Mapping):
        data = raw
    elif raw is None:
        return SerializedError(title=MALFORMED_ERROR_TITLE, cause="the error payload was empty")
    else:
        buf = bytes(raw) if isinstance(raw, msgspec.Raw) else raw
        try:
            data = msgspec.json.decode(buf)
        except (msgspec.DecodeError, TypeError, ValueError):
            text = buf.decode("utf-8", "replace") if isinstance(buf, bytes) else str(buf)
            return SerializedError(title=MALFORMED_ERROR_TITLE, cause=_truncate(text))
    if isinstance(data, str):
        return SerializedError(title=data or MALFORMED_ERROR_TITLE)
    if not isinstance(data, Mapping):
        return SerializedError(title=MALFORMED_ERROR_TITLE, cause=_truncate(repr(data)))
    kwargs: dict[str, Any] = {}
    for wire, name in _STR_FIELDS.items():
        value = data.get(wire)
        if isinstance(value, str):
            kwargs[name] = value
    for wire, name in _DICT_FIELDS.items():
        value = data.get(wire)
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            kwargs[name] = dict(value)
    return SerializedError(**kwargs)


def _truncate(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def map_server_error(
    err: SerializedError,
    *,
    operation: str,
    subject: str | None = None,
    secrets: Iterable[str | None] = (),
) -> ServerError:
    """Turn a server error payload into the exception to raise.

    Returns :class:`ModelNotFoundError` for the codes in
    :data:`MODEL_NOT_FOUND_CODES`, else :class:`ServerError`. ``operation``
    (e.g. ``"Model load"``, ``"Unload"``, ``"RPC getModelInfo"``) prefixes the
    message; ``subject`` is the model key / identifier / path the user asked
    about, used when the server's data does not name it. Any string in
    ``secrets`` (e.g. the API token) is replaced by ``***`` in all text taken
    from the server. The server's ``stack`` is dropped.
    """
    secret_list = [s for s in secrets if s]

    def clean(text: str | None) -> str | None:
        return scrub(text, secret_list) if text is not None else None

    title = clean(err.title) or clean(err.root_title) or "Unknown error"
    root_title = clean(err.root_title)
    display_data = (
        _scrub_obj(err.display_data, secret_list) if err.display_data else err.display_data
    )
    error_data = _scrub_obj(err.error_data, secret_list) if err.error_data else err.error_data
    code = display_data.get("code") if isinstance(display_data, dict) else None
    common: dict[str, Any] = {
        "root_title": root_title,
        "cause": clean(err.cause),
        "suggestion": clean(err.suggestion),
        "display_data": display_data,
        "error_data": error_data,
        "operation": operation,
    }
    if code in MODEL_NOT_FOUND_CODES:
        return ModelNotFoundError(title, subject=subject, **common)
    return ServerError(title, **common)


def _scrub_obj(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub_obj(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_obj(v, secrets) for v in value]
    return value
