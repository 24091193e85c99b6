"""The async model-management tests (``tests/client/test_models.py``), run on the sync Client.

Every ``test_*`` of that module is collected here too, with the ``client`` fixture replaced
by the sync :class:`~lmstudio_async.Client` behind :class:`~tests.sync._shape.AsyncShape`.
Only tests about asyncio task cancellation or ``gather`` concurrency are left out
(``ASYNC_ONLY``); their sync counterparts (Ctrl-C, threads) are in ``test_sync.py``.
A new async test therefore runs on the sync client automatically.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client import test_models as _async_tests  # tests/ is on sys.path (rootdir-relative)

from lmstudio_async._sync import client as _sync
from lmstudio_async.testing import ThreadedStandInServer

from ._shape import AsyncShape

ASYNC_ONLY = {
    "test_loaded_context_manager_unloads_on_cancellation": "asyncio task.cancel()",
    "test_cancelling_a_load_cancels_it_on_the_server": "asyncio task.cancel()",
    "test_cancel_right_at_success_unloads_what_finished": "asyncio task.cancel()",
    "test_concurrent_loads_of_different_models_overlap": "asyncio.gather concurrency",
    "test_single_flight": "asyncio.gather concurrency",
    "test_one_callers_deadline_does_not_fail_the_others_of_a_shared_load": "two concurrent "
    "asyncio callers; test_sync.py has the threaded counterpart",
    "test_the_last_caller_to_give_up_stops_the_shared_load": "two concurrent asyncio callers",
    "test_a_caller_arriving_while_a_shared_load_is_cancelled_loads_afresh": "asyncio "
    "task.cancel() racing a new caller",
    "test_each_caller_of_a_shared_load_runs_its_own_callback": "concurrent asyncio callers; "
    "a sync caller's callback runs in its own thread (test_sync.py)",
    "test_the_last_caller_failing_after_the_load_keeps_what_the_others_got": "two "
    "concurrent asyncio callers",
    "test_a_config_mismatch_warning_names_the_callers_line": "the mirror's caller is its "
    "shim; test_sync.py checks the sync client's own",
}

for _name, _test in vars(_async_tests).items():
    if _name.startswith("test_") and _name not in ASYNC_ONLY:
        globals()[_name] = _test


@pytest.fixture
def client(lmstudio_server: ThreadedStandInServer) -> Iterator[AsyncShape]:
    sync_client = _sync.Client(lmstudio_server.host)
    try:
        yield AsyncShape(sync_client)
    finally:
        sync_client.close()


def test_every_async_test_is_mirrored_or_listed() -> None:
    mirrored = {n for n in globals() if n.startswith("test_")}
    for name in vars(_async_tests):
        if name.startswith("test_"):
            assert name in mirrored or name in ASYNC_ONLY, name
    assert set(ASYNC_ONLY) <= set(vars(_async_tests)), "stale ASYNC_ONLY entry"
