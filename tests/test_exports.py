"""The public surface: everything in __all__ exists, and nothing private leaks."""

from __future__ import annotations

import lmstudio_async


def test_all_names_exist_and_are_unique() -> None:
    names = lmstudio_async.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(lmstudio_async, name), name


def test_public_module_attributes_are_exported() -> None:
    public = {
        name
        for name, value in vars(lmstudio_async).items()
        if not name.startswith("_") and not isinstance(value, type(lmstudio_async))
    }
    assert public <= set(lmstudio_async.__all__), public - set(lmstudio_async.__all__)


def test_exported_classes_claim_the_public_module() -> None:
    for name in lmstudio_async.__all__:
        value = getattr(lmstudio_async, name)
        if isinstance(value, type):
            assert value.__module__.startswith("lmstudio_async"), name


def test_core_names() -> None:
    expected = {
        "AsyncClient",
        "LLM",
        "EmbeddingModel",
        "LlmLoadConfig",
        "EmbeddingLoadConfig",
        "Timeouts",
        "LMStudioError",
        "ServerError",
        "ModelNotFoundError",
        "ProtocolError",
        "LMStudioTimeoutError",
        "LMStudioConnectionError",
        "AuthenticationError",
        # What .info of a search result / download option returns, for annotations.
        "SearchResultData",
        "DownloadOptionData",
    }
    assert expected <= set(lmstudio_async.__all__)
    assert issubclass(lmstudio_async.LMStudioTimeoutError, TimeoutError)
    assert issubclass(lmstudio_async.ModelNotFoundError, lmstudio_async.ServerError)
    assert issubclass(lmstudio_async.AuthenticationError, lmstudio_async.LMStudioConnectionError)


def test_import_has_no_side_effects() -> None:
    import threading

    names = {t.name for t in threading.enumerate()}
    assert not any("lmstudio" in n.lower() for n in names)
