"""Shared runner: lets tests written once against the async API drive the sync facade.

:class:`AsyncShape` wraps a sync facade object (client, namespace, handle) and gives it the
call shape of its async counterpart: every method call returns a coroutine that makes the
*sync* call (blocking the test's event loop, as a sync call inside Jupyter would) and
``loaded(...)`` is an async context manager over the sync one. Results that are sync facade
objects are wrapped again. ``isinstance(shape, lms.LLM)`` holds when the target is a
``SyncLLM`` (the shape reports the async class its target mirrors), so assertions written for
the async API apply unchanged.
"""

from __future__ import annotations

import inspect
from typing import Any

import lmstudio_async as lms
from lmstudio_async._sync import client as _sync

ASYNC_TWIN: dict[type, type] = {
    _sync.Client: lms.AsyncClient,
    _sync.SyncLlmNamespace: lms.LlmNamespace,
    _sync.SyncEmbeddingNamespace: lms.EmbeddingNamespace,
    _sync.SyncSystemNamespace: lms.SystemNamespace,
    _sync.SyncLLM: lms.LLM,
    _sync.SyncEmbeddingModel: lms.EmbeddingModel,
}
RENAMES = {"aclose": "close"}


def shaped(value: Any) -> Any:
    if type(value) in ASYNC_TWIN:
        return AsyncShape(value)
    if type(value) is list:
        return [shaped(item) for item in value]
    return value


class _AsyncContext:
    def __init__(self, context: Any) -> None:
        self._context = context

    async def __aenter__(self) -> Any:
        return shaped(self._context.__enter__())

    async def __aexit__(self, *exc_info: Any) -> Any:
        return self._context.__exit__(*exc_info)


class AsyncShape:
    """A sync facade object with the call shape of the async API."""

    __slots__ = ("target",)

    def __init__(self, target: Any) -> None:
        assert type(target) in ASYNC_TWIN, target
        object.__setattr__(self, "target", target)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return ASYNC_TWIN[type(self.target)]

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.target, RENAMES.get(name, name))
        if name == "loaded":
            return lambda *args, **kwargs: _AsyncContext(value(*args, **kwargs))
        if inspect.ismethod(value):

            async def call(*args: Any, **kwargs: Any) -> Any:
                return shaped(value(*args, **kwargs))

            return call
        return shaped(value)

    def __eq__(self, other: object) -> bool:
        return bool(self.target == (other.target if isinstance(other, AsyncShape) else other))

    def __hash__(self) -> int:
        return hash(self.target)

    def __repr__(self) -> str:
        return f"AsyncShape({self.target!r})"

    async def __aenter__(self) -> AsyncShape:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.target.close()
