# mypy: disable-error-code="empty-body"
# Method bodies marked ``@_hop`` are typed stubs: the decorator forwards the call to the
# async method of the same name in one hop into the loop thread.
"""The sync model pool: :class:`ModelPool`, the same API as :class:`AsyncModelPool`.

Every call, including entering and leaving a ``with pool.use(key)`` block, makes one hop
into the loop thread shared by the sync clients, where an :class:`AsyncModelPool` over
their async clients does the work.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar, cast

from .._async.pool import (
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_WAITING,
    AsyncModelPool,
    Eviction,
    MemoryBudget,
    PoolLease,
    PoolStats,
)
from .._async.pool.core import _DEFAULT_LOAD_TIMEOUT, _DEFAULT_RECONCILE_SECONDS, pool_clients
from ..config import EmbeddingLoadConfig, LlmLoadConfig
from ..errors import LMStudioError, LoopThreadError
from .client import Client, SyncEmbeddingModel, SyncLLM, _Facade, _wrap
from .loop import _Lease

__all__ = ["ModelPool", "SyncPoolLease"]

_H = TypeVar("_H")
_F = TypeVar("_F", bound=Callable[..., Any])


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a plain function in the loop thread (the pool's state lives there)."""
    return fn(*args)


def _hop_plain(stub: _F) -> _F:
    """Like ``_hop`` for a plain (not async) method of the async pool."""
    name = stub.__name__

    @functools.wraps(stub)
    def method(self: ModelPool, /, *args: Any) -> Any:
        return self._lease.call(_run, (getattr(self._async, name), *args))

    return cast(_F, method)


class SyncPoolLease(Generic[_H]):
    """``with pool.use(key) as model``: one lease, entered and left in one hop each.

    An error inside the block reaches the pool (so it can mark an instance gone or a
    host down) and is raised in this thread, replaced by :class:`HostDownError` for a
    dropped connection.
    """

    def __init__(self, lease: _Lease, async_lease: PoolLease[Any]) -> None:
        self._lease = lease
        self._async_lease = async_lease

    def __repr__(self) -> str:
        return repr(self._async_lease).replace("<", "<Sync", 1)

    def __enter__(self) -> _H:
        try:
            handle = self._lease.call(self._async_lease.__aenter__)
        except BaseException:
            # Ctrl-C just as the lease was granted: give it back (a no-op if it was not).
            with contextlib.suppress(LMStudioError):
                self._lease.call(_run, (self._async_lease._exit, None))
            raise
        return cast(_H, _wrap(handle, self._lease))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            replacement = self._lease.call(_run, (self._async_lease._exit, exc))
        except LoopThreadError:
            return  # the loop thread (and the pool with it) is gone
        if replacement is not None:
            raise replacement from exc


class ModelPool(_Facade):
    """Synchronous model pool: the same API as :class:`AsyncModelPool`, without ``await``.

    ``clients`` is one sync :class:`Client` or a sequence of them (one per host)::

        with Client("localhost:1234") as client, ModelPool(client, memory_budget=8 * 10**9) as pool:
            with pool.llm("qwen2.5-7b-instruct-1m") as model:
                print(model.respond("Hello").content)

    Safe to share between threads; each call makes one hop into the shared loop thread.
    Close it (``with`` or :meth:`close`) before closing its clients.
    """

    _async_cls = AsyncModelPool
    _async: AsyncModelPool

    _RENAMES: ClassVar[dict[str, str]] = {"close": "aclose", "__enter__": "__aenter__"}

    def __init__(
        self,
        clients: Client | Sequence[Client],
        *,
        memory_budget: MemoryBudget = None,
        memory_estimates: Mapping[str, int] | None = None,
        max_waiting: int = DEFAULT_MAX_WAITING,
        max_concurrent_per_instance: int | None = None,
        max_replicas: int = 1,
        ttl: float | None = None,
        load_timeout: float | None = _DEFAULT_LOAD_TIMEOUT,
        reconcile_interval: float | None = _DEFAULT_RECONCILE_SECONDS,
        eviction: Eviction = "lfu",
    ) -> None:
        client_list = pool_clients(clients, Client, "ModelPool", "a sync Client")
        lease = client_list[0]._lease
        pool = AsyncModelPool(
            [c._async for c in client_list],
            memory_budget=memory_budget,
            memory_estimates=memory_estimates,
            max_waiting=max_waiting,
            max_concurrent_per_instance=max_concurrent_per_instance,
            max_replicas=max_replicas,
            ttl=ttl,
            load_timeout=load_timeout,
            reconcile_interval=reconcile_interval,
            eviction=eviction,
        )
        super().__init__(pool, lease)
        # Every client's lease, so that none of them is collected (and closed) under the pool.
        self._leases = tuple(c._lease for c in client_list)
        self._closed = False

    def __repr__(self) -> str:
        try:  # the pool's state lives in the loop thread: read it there
            text: str = self._lease.call(_run, (repr, self._async))
        except LMStudioError:
            text = f"<AsyncModelPool {'closed' if self._async.closed else 'open'}>"
        return text.replace("<AsyncModelPool", "<ModelPool", 1)

    @property
    def closed(self) -> bool:
        return self._closed or self._async.closed

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the pool and unload every instance it loaded (its clients stay open)."""
        self._closed = True
        if not self._lease.closed:
            self._lease.call(self._async.aclose)
            return
        # Its client was closed first (pool.md asks for the other order): the pool's
        # instances cannot be unloaded, but its tasks are stopped and it reports closed, as
        # the async pool does; with no loop thread left, there is nothing more to stop.
        with contextlib.suppress(LMStudioError):
            self._lease.finish(self._async.aclose)

    def use(
        self,
        key: str,
        *,
        config: LlmLoadConfig | EmbeddingLoadConfig | Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_LEASE_TIMEOUT,
    ) -> SyncPoolLease[SyncLLM | SyncEmbeddingModel]:
        """``with pool.use(key) as model:`` lease an instance of ``key`` (a :class:`SyncLLM`
        or :class:`SyncEmbeddingModel`); see :meth:`AsyncModelPool.use`."""
        return SyncPoolLease(self._lease, self._async.use(key, config=config, timeout=timeout))

    def llm(
        self,
        key: str,
        *,
        config: LlmLoadConfig | Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_LEASE_TIMEOUT,
    ) -> SyncPoolLease[SyncLLM]:
        """``with pool.llm(key) as model:`` :meth:`use` for an LLM (a :class:`SyncLLM`)."""
        return SyncPoolLease(self._lease, self._async.llm(key, config=config, timeout=timeout))

    def embedding(
        self,
        key: str,
        *,
        config: EmbeddingLoadConfig | Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_LEASE_TIMEOUT,
    ) -> SyncPoolLease[SyncEmbeddingModel]:
        """``with pool.embedding(key) as model:`` :meth:`use` for an embedding model."""
        return SyncPoolLease(
            self._lease, self._async.embedding(key, config=config, timeout=timeout)
        )

    @_hop_plain
    def pin(self, key: str) -> None: ...

    @_hop_plain
    def unpin(self, key: str) -> None: ...

    @_hop_plain
    def stats(self) -> PoolStats: ...
