"""The sync facade mirrors the async API exactly (names, parameters, kinds, defaults).

Return annotations may differ (sync handles instead of async ones). The only renames are
``aclose`` -> ``close`` and ``__aenter__``/``__aexit__`` -> ``__enter__``/``__exit__``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lmstudio_async._async import client as a
from lmstudio_async._async import files as af
from lmstudio_async._async import pool as ap
from lmstudio_async._async import repository as ar
from lmstudio_async._sync import client as s
from lmstudio_async._sync import pool as sp

PAIRS: list[tuple[type, type]] = [
    (a.AsyncClient, s.Client),
    (a.LlmNamespace, s.SyncLlmNamespace),
    (a.EmbeddingNamespace, s.SyncEmbeddingNamespace),
    (a.SystemNamespace, s.SyncSystemNamespace),
    (a.LLM, s.SyncLLM),
    (a.EmbeddingModel, s.SyncEmbeddingModel),
    (af.FilesNamespace, s.SyncFilesNamespace),
    (ar.RepositoryNamespace, s.SyncRepositoryNamespace),
    (ar.ModelSearchResult, s.SyncModelSearchResult),
    (ar.DownloadOption, s.SyncDownloadOption),
    (ap.AsyncModelPool, sp.ModelPool),
    (ap.PoolLease, sp.SyncPoolLease),
]
RENAMES = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
IDS = [sync.__name__ for _, sync in PAIRS]


def public_names(cls: type) -> set[str]:
    names = {n for n in dir(cls) if not n.startswith("_")}
    names |= {n for n in ("__aenter__", "__aexit__", "__enter__", "__exit__") if hasattr(cls, n)}
    return names


def shape(fn: Any) -> list[tuple[str, Any, Any]]:
    params = list(inspect.signature(fn).parameters.values())[1:]  # drop self
    return [(p.name, p.kind, p.default) for p in params]


def members(async_cls: type, sync_cls: type) -> Iterator[tuple[str, Any, Any]]:
    for name in sorted(public_names(async_cls)):
        yield (
            name,
            inspect.getattr_static(async_cls, name),
            getattr(sync_cls, RENAMES.get(name, name)),
        )


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=IDS)
def test_same_public_names(async_cls: type, sync_cls: type) -> None:
    expected = {RENAMES.get(n, n) for n in public_names(async_cls)}
    assert public_names(sync_cls) == expected


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=IDS)
def test_same_signatures_and_kinds(async_cls: type, sync_cls: type) -> None:
    for name, async_attr, sync_attr in members(async_cls, sync_cls):
        if isinstance(async_attr, property):
            assert isinstance(inspect.getattr_static(sync_cls, name), property), name
            continue
        assert callable(sync_attr), name
        assert not inspect.iscoroutinefunction(sync_attr), name
        assert shape(sync_attr) == shape(async_attr), name


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=IDS)
def test_every_public_member_is_documented(async_cls: type, sync_cls: type) -> None:
    assert sync_cls.__doc__
    for name, _, sync_attr in members(async_cls, sync_cls):
        if not name.startswith("__"):
            assert inspect.getdoc(sync_attr), name


def test_constructor_signatures_match() -> None:
    assert inspect.signature(s.Client.__init__) == inspect.signature(a.AsyncClient.__init__)


def test_same_instance_attributes() -> None:
    async_client = a.AsyncClient("127.0.0.1:1")  # connects nothing until the first call
    with s.Client("127.0.0.1:1") as sync_client:
        assert {n for n in vars(sync_client) if not n.startswith("_")} == {
            n for n in vars(async_client) if not n.startswith("_")
        }
        for name, sync_cls in [
            ("llm", s.SyncLlmNamespace),
            ("embedding", s.SyncEmbeddingNamespace),
            ("system", s.SyncSystemNamespace),
            ("files", s.SyncFilesNamespace),
            ("repository", s.SyncRepositoryNamespace),
        ]:
            assert type(getattr(sync_client, name)) is sync_cls
            assert (sync_cls, type(getattr(async_client, name))) in [(y, x) for x, y in PAIRS]


def test_sync_context_manager_mirrors_loaded() -> None:
    # async ``loaded`` is an async-context-manager factory; the sync one a plain one.
    assert not inspect.iscoroutinefunction(a.LlmNamespace.loaded)
    assert "with" in (inspect.getdoc(s.SyncLlmNamespace.loaded) or "")


@pytest.mark.parametrize(
    ("function", "namespace"),
    [(s.llm, s.SyncLlmNamespace), (s.embedding_model, s.SyncEmbeddingNamespace)],
)
def test_default_client_shortcuts_take_model_parameters(
    function: Callable[..., Any], namespace: type
) -> None:
    # lms.llm(...) / lms.embedding_model(...) spell out model()'s parameters (typed, no
    # **kwargs), so a parameter added to model() must be added to them too.
    shortcut = inspect.signature(function).parameters
    method = dict(inspect.signature(namespace.model).parameters)
    method.pop("self")
    assert list(shortcut) == list(method)
    for name, param in shortcut.items():
        assert (param.kind, param.default) == (method[name].kind, method[name].default), name
