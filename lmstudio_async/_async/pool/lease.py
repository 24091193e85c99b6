"""The context manager of one pool lease (``async with pool.use(key) as model``)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from ...errors import LMStudioValueError
from ..handle import _ModelHandle

if TYPE_CHECKING:
    from .core import AsyncModelPool
    from .state import _Instance

__all__ = ["PoolLease"]

_H = TypeVar("_H", bound=_ModelHandle[Any, Any])


class PoolLease(Generic[_H]):
    """``async with pool.use(key) as model``: the context manager of one lease.

    ``model`` is the leased handle; on exit the lease is released (also on error and
    on cancellation). A connection error inside the block marks the host down and is
    raised as :class:`HostDownError`; :class:`ModelUnloadedError` tells the pool the
    instance is gone, so the next lease of its key loads it again.
    """

    def __init__(
        self,
        pool: AsyncModelPool,
        key: str,
        config: Any,
        timeout: float | None,
        domain: str | None,
    ) -> None:
        self._pool = pool
        self._key = key
        self._config = config
        self._timeout = timeout
        self._domain = domain
        self._instance: _Instance | None = None
        self._waiting = False
        self._entered = False

    def __repr__(self) -> str:
        inst = self._instance
        if inst is not None:
            state = f"leased {inst.identifier or inst.key!r}"
        elif self._waiting:
            state = "waiting"
        else:
            state = "released" if self._entered else "not entered"
        return f"<{type(self).__name__} {self._key!r} {state}>"

    async def __aenter__(self) -> _H:
        if self._instance is not None or self._waiting:
            raise LMStudioValueError("this lease is already in use; call pool.use() again")
        self._entered = self._waiting = True
        try:
            inst = await self._pool._acquire(self._key, self._config, self._timeout, self._domain)
        finally:
            self._waiting = False
        self._instance = inst
        assert inst.handle is not None
        return cast(_H, inst.handle)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        replacement = self._exit(exc)
        if replacement is not None:
            raise replacement from exc

    def _exit(self, exc: BaseException | None) -> BaseException | None:
        """Release the lease; returns the exception to raise instead of ``exc``, if any."""
        inst, self._instance = self._instance, None
        if inst is None:
            return None
        return self._pool._release(inst, exc)
