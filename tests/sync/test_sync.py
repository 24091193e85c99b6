"""Sync-only behaviour: the shared loop thread, threads, Ctrl-C, hops, the default client."""

from __future__ import annotations

import _thread
import asyncio
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import lmstudio_async as lms
from lmstudio_async._sync import client as _sync
from lmstudio_async._sync.client import Client, SyncEmbeddingModel, SyncLLM
from lmstudio_async.errors import LoopThreadError
from lmstudio_async.testing import ThreadedStandInServer

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
TOKEN = "sk-lm-abcDEF78:abcDEF7890abcDEF7890"
OTHER_TOKEN = "sk-lm-abcDEF78:zzzzzz7890abcDEF7890"


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lmstudio-async-loop"]


def eventually(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def loaded_ids(server: ThreadedStandInServer) -> list[str]:
    return [i.identifier for i in server.loaded_instances()]


@pytest.fixture
def client(lmstudio_server: ThreadedStandInServer) -> Iterator[Client]:
    with Client(lmstudio_server.host) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_default_client_leak() -> Iterator[None]:
    yield
    _sync._close_default_client()
    _sync._default_settings.clear()


# --- the shared, leased loop thread ---------------------------------------------------------


def test_loop_thread_starts_with_first_client_and_stops_with_last(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    assert loop_threads() == []
    first = Client(lmstudio_server.host)
    second = Client(lmstudio_server.host)
    assert len(loop_threads()) == 1
    first.llm.list_loaded()
    first.close()
    assert len(loop_threads()) == 1
    assert second.llm.list_loaded() == []
    second.close()
    second.close()  # idempotent
    assert loop_threads() == []
    # a new client starts a new thread
    with Client(lmstudio_server.host) as third:
        assert third.system.version()
        assert len(loop_threads()) == 1
    assert loop_threads() == []


def test_calls_after_close_raise_client_closed(lmstudio_server: ThreadedStandInServer) -> None:
    with Client(lmstudio_server.host) as client:
        handle = client.llm.load(SMOL)
    assert client.closed
    with pytest.raises(lms.ClientClosedError, match=lmstudio_server.host):
        client.llm.list_loaded()
    with pytest.raises(lms.ClientClosedError):
        handle.get_info()


def test_async_client_lives_in_the_loop_thread(client: Client) -> None:
    client.system.version()
    runner = client._lease.runner
    tasks_threads: list[threading.Thread] = []

    async def where() -> None:
        tasks_threads.append(threading.current_thread())

    runner.call(where)
    assert tasks_threads == [runner.thread]


# --- one hop, progress in the caller's thread ------------------------------------------------


def test_exactly_one_hop_per_call_even_with_progress(
    client: Client, lmstudio_server: ThreadedStandInServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.llm.list_loaded()  # connect
    loop = client._lease.runner.loop
    caller = threading.current_thread()
    hops: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is caller:
            hops.append(callback)
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    seen: list[tuple[float, threading.Thread]] = []
    llm = client.llm.load(LLAMA, on_progress=lambda p: seen.append((p, threading.current_thread())))
    assert len(hops) == 1
    assert len(seen) >= 10
    assert seen[-1][0] == 1.0
    assert {thread for _, thread in seen} == {caller}  # plain callbacks run in the caller
    for call in (
        llm.get_info,
        llm.get_context_length,
        client.llm.list_loaded,
        client.system.version,
    ):
        hops.clear()
        call()
        assert len(hops) == 1, call
    hops.clear()
    with client.llm.loaded(SMOL):
        assert len(hops) == 1
    assert len(hops) == 2


@pytest.mark.lmstudio_server(load_seconds=5.0)
def test_progress_callback_error_cancels_the_load(
    client: Client, lmstudio_server: ThreadedStandInServer
) -> None:
    def on_progress(fraction: float) -> None:
        if fraction > 0.05:
            raise RuntimeError("stop it")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stop it"):
        client.llm.load(LLAMA, on_progress=on_progress)
    assert time.monotonic() - start < 3
    eventually(lambda: lmstudio_server.cancel_count == 1)
    eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert lmstudio_server.loaded_instances() == []


def test_sync_call_from_the_loop_thread_is_refused(client: Client) -> None:
    async def on_progress(fraction: float) -> None:  # runs in the loop thread
        client.llm.list_loaded()

    with pytest.raises(LoopThreadError, match="own event-loop thread"):
        client.llm.load(SMOL, on_progress=on_progress)


# --- threads and running event loops ---------------------------------------------------------


def test_many_threads_share_one_client(
    client: Client, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload(SMOL)
    errors: list[BaseException] = []
    counts: list[int] = []

    def worker() -> None:
        try:
            n = 0
            for _ in range(100):
                (handle,) = client.llm.list_loaded()
                assert isinstance(handle, SyncLLM)
                assert handle.identifier == SMOL
                n += 1
            counts.append(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert counts == [100] * 8


@pytest.mark.lmstudio_server(load_seconds=0.5)
def test_single_flight_across_threads(
    client: Client, lmstudio_server: ThreadedStandInServer
) -> None:
    results: list[SyncLLM] = []
    threads = [
        threading.Thread(target=lambda: results.append(client.llm.model(LLAMA))) for _ in range(10)
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert time.monotonic() - start < 3  # parallel, not ten loads in series
    assert len(results) == 10
    assert len(set(results)) == 1
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 1


@pytest.mark.lmstudio_server(load_seconds=1.0)
def test_one_threads_deadline_does_not_fail_another_threads_shared_load(
    client: Client, lmstudio_server: ThreadedStandInServer
) -> None:
    outcomes: dict[str, Any] = {}

    def call(name: str, timeout: lms.Timeouts | None) -> None:
        try:
            outcomes[name] = client.llm.model(LLAMA, timeout=timeout)
        except lms.LMStudioError as exc:
            outcomes[name] = exc

    hasty = threading.Thread(target=call, args=("hasty", lms.Timeouts(total=0.3)))
    patient = threading.Thread(target=call, args=("patient", lms.Timeouts()))
    hasty.start()
    patient.start()
    hasty.join(10)
    patient.join(10)
    assert isinstance(outcomes["hasty"], lms.LMStudioTimeoutError)
    assert isinstance(outcomes["patient"], SyncLLM)
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 1


async def test_usable_inside_a_running_event_loop(lmstudio_server: ThreadedStandInServer) -> None:
    # as in Jupyter: blocking calls from a coroutine, no asyncio.run in this thread
    with Client(lmstudio_server.host) as client:
        llm = client.llm.load(SMOL)
        emb = client.embedding.model(NOMIC)
        assert isinstance(emb, SyncEmbeddingModel)
        assert client.llm.list_loaded() == [llm]
        with client.llm.loaded(SMOL, "scoped") as scoped:
            assert scoped.get_context_length() > 0
        await asyncio.sleep(0)  # our own loop is untouched


def test_usable_inside_asyncio_run(lmstudio_server: ThreadedStandInServer) -> None:
    async def main() -> list[str]:
        with Client(lmstudio_server.host) as client:
            client.llm.load(SMOL)
            return [h.identifier for h in client.llm.list_loaded()]

    assert asyncio.run(main()) == [SMOL]


# --- Ctrl-C and deadlines --------------------------------------------------------------------


def _interrupt_after_progress(how: str) -> tuple[Callable[[float], None], threading.Thread]:
    progressed = threading.Event()
    main_id = threading.main_thread().ident
    assert main_id is not None

    def fire() -> None:
        if progressed.wait(10):
            if how == "signal":
                signal.pthread_kill(main_id, signal.SIGINT)  # a real Ctrl-C
            else:
                _thread.interrupt_main()  # no real signal: relies on the chunked wait

    timer = threading.Thread(target=fire, daemon=True)
    timer.start()

    def on_progress(fraction: float) -> None:
        if fraction > 0:
            progressed.set()

    return on_progress, timer


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
@pytest.mark.lmstudio_server(load_seconds=5.0)
@pytest.mark.parametrize("how", ["signal", "interrupt_main"])
@pytest.mark.parametrize("method", ["load", "model", "loaded"])
def test_ctrl_c_during_a_load_cancels_it_on_the_server(
    client: Client, lmstudio_server: ThreadedStandInServer, how: str, method: str
) -> None:
    on_progress, timer = _interrupt_after_progress(how)

    def call() -> None:
        if method == "loaded":
            with client.llm.loaded(LLAMA, on_progress=on_progress):
                pytest.fail("entered although interrupted")
        else:
            getattr(client.llm, method)(LLAMA, on_progress=on_progress)

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        call()
    timer.join(5)
    assert time.monotonic() - start < 3
    eventually(lambda: lmstudio_server.cancel_count == 1)
    eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert lmstudio_server.loaded_instances() == []
    assert client.llm.list_loaded() == []  # the client is still usable


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_ctrl_c_inside_loaded_block_unloads(
    client: Client, lmstudio_server: ThreadedStandInServer
) -> None:
    main_id = threading.main_thread().ident
    assert main_id is not None

    def use() -> None:
        with client.llm.loaded(SMOL, "scoped"):
            assert loaded_ids(lmstudio_server) == ["scoped"]
            threading.Timer(0.1, signal.pthread_kill, (main_id, signal.SIGINT)).start()
            time.sleep(5)

    with pytest.raises(KeyboardInterrupt):
        use()
    assert loaded_ids(lmstudio_server) == []


@pytest.mark.lmstudio_server(load_seconds=5.0)
def test_total_deadline_raises_timeout_error_and_cancels(
    client: Client, lmstudio_server: ThreadedStandInServer
) -> None:
    with pytest.raises(TimeoutError) as info:
        client.llm.load(LLAMA, timeout=lms.Timeouts(total=0.4))
    assert isinstance(info.value, lms.LMStudioTimeoutError)
    assert info.value.kind == "total"
    eventually(lambda: lmstudio_server.cancel_count == 1)
    assert lmstudio_server.loaded_instances() == []


@pytest.mark.lmstudio_server(load_seconds=5.0)
def test_dead_loop_thread_is_a_clear_error_not_a_hang(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    client = Client(lmstudio_server.host)
    runner = client._lease.runner
    threading.Timer(0.3, runner.loop.call_soon_threadsafe, (runner.loop.stop,)).start()
    start = time.monotonic()
    with pytest.raises(LoopThreadError):
        client.llm.load(LLAMA)
    assert time.monotonic() - start < 3
    runner.thread.join(5)
    with pytest.raises(LoopThreadError, match="no longer running"):
        client.llm.list_loaded()
    client.close()  # no error, lease released
    with Client(lmstudio_server.host) as fresh:  # a new thread
        assert fresh.llm.list_loaded() == []
    assert loop_threads() == []


# --- handles ------------------------------------------------------------------------------


def test_handles_wrap_async_handles(client: Client, lmstudio_server: ThreadedStandInServer) -> None:
    llm = client.llm.load(SMOL, "mine")
    again = client.llm.model("mine")
    assert isinstance(llm, SyncLLM)
    assert llm == again
    assert hash(llm) == hash(again)
    assert llm != client.llm.load(SMOL)
    assert repr(llm) == f"<SyncLLM 'mine' ({SMOL})>"
    assert isinstance(llm.info, lms.LlmInstanceInfo)
    assert llm.instance_reference == lmstudio_server.loaded_instances()[0].instance_reference
    assert isinstance(llm.get_load_config(), lms.LlmLoadConfig)
    assert repr(client).startswith("<Client host=")
    # The namespaces name the sync Client they belong to, not its AsyncClient.
    client_repr = repr(client)
    assert repr(client.llm) == f"<SyncLlmNamespace of {client_repr}>"
    assert repr(client.embedding) == f"<SyncEmbeddingNamespace of {client_repr}>"
    assert repr(client.system) == f"<SyncSystemNamespace of {client_repr}>"
    assert repr(client.files) == f"<SyncFilesNamespace of {client_repr}>"
    assert repr(client.repository) == f"<SyncRepositoryNamespace of {client_repr}>"


# --- the default client ---------------------------------------------------------------------


@pytest.mark.lmstudio_server(api_token=TOKEN)
def test_default_client_applies_host_and_token(lmstudio_server: ThreadedStandInServer) -> None:
    _sync.configure_default_client(lmstudio_server.host, api_token=TOKEN)
    model = _sync.llm(SMOL)
    assert isinstance(model, SyncLLM)
    assert _sync.llm() == model
    assert _sync.get_default_client() is _sync.get_default_client()
    assert _sync.embedding_model(NOMIC).model_key == NOMIC  # JIT: evicts the JIT-loaded LLM
    _sync.configure_default_client(lmstudio_server.host, api_token=OTHER_TOKEN)
    with pytest.raises(lms.AuthenticationError):
        _sync.llm()


def test_default_client_survives_restart_and_close() -> None:
    server = ThreadedStandInServer(0, load_seconds=0.0).start()
    try:
        _sync.configure_default_client(server.host)
        _sync.llm(SMOL)
        server.restart(reset_state=True)
        assert _sync.get_default_client().llm.list_loaded() == []  # reconnected
        _sync.llm(SMOL)
        first = _sync.get_default_client()
        first.close()
        assert _sync.get_default_client() is not first
        assert _sync.llm().identifier == SMOL
    finally:
        server.stop()



@pytest.mark.parametrize(
    "kwargs",
    [
        {"api_host": "localhost"},
        {"api_host": 5},
        {"api_host": "127.0.0.1:1234", "ssl": "yes"},
        {"api_host": "127.0.0.1:1234", "api_token": "bad"},
        {"api_host": "127.0.0.1:1234", "api_token": 5},
        {"api_host": "127.0.0.1:1234", "api_token": b"sk-lm-abcd1234:abcdefghij0123456789"},
        {"api_host": "127.0.0.1:1234", "timeout": "x"},
    ],
)
def test_configure_default_client_checks_its_arguments_at_once(
    lmstudio_server: ThreadedStandInServer, kwargs: dict[str, Any]
) -> None:
    _sync.configure_default_client(lmstudio_server.host)
    with pytest.raises(lms.LMStudioValueError):
        _sync.configure_default_client(**kwargs)
    assert _sync.llm(SMOL).identifier == SMOL  # the settings before it still apply


@pytest.mark.parametrize("token", [5, b"sk-lm-abcd1234:abcdefghij0123456789"])
def test_a_client_token_that_is_not_a_str_is_a_value_error(token: object) -> None:
    with pytest.raises(lms.LMStudioValueError, match=r"^api_token must be a str or None, got "):
        lms.Client("127.0.0.1:1234", api_token=token)  # type: ignore[arg-type]

_SCRIPT = """
import sys
from lmstudio_async._sync.client import Client

def on_progress(fraction):
    if fraction > 0:
        print("progress", flush=True)

client = Client(sys.argv[1])
try:
    client.llm.load("%s", on_progress=on_progress)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    client.close()
    sys.exit(130)
"""


def _ctrl_c_after_the_first_progress(script: str, *args: str, within: float) -> str:
    """Run ``script``, send it one SIGINT (what Ctrl-C in a terminal does) once it printed
    ``progress``, and require exit code 130 within ``within`` seconds; its last line."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "progress"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(within) == 130
            return proc.stdout.read().splitlines()[-1]
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.lmstudio_server(load_seconds=10.0)
def test_real_ctrl_c_in_a_script_cancels_the_load(lmstudio_server: ThreadedStandInServer) -> None:
    last = _ctrl_c_after_the_first_progress(_SCRIPT % LLAMA, lmstudio_server.host, within=10)
    assert last == "interrupted"
    eventually(lambda: lmstudio_server.cancel_count == 1)
    eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert lmstudio_server.loaded_instances() == []


_IN_ASYNCIO_RUN_SCRIPT = """
import asyncio, sys
from lmstudio_async._sync.client import Client

def on_progress(fraction):
    if fraction > 0:
        print("progress", flush=True)

async def main(client):
    # Sync calls from a coroutine (as in a notebook): asyncio.run's own SIGINT handler
    # cancels this task instead of raising KeyboardInterrupt in the waiting thread.
    if sys.argv[2] == "load":
        client.llm.load("%s", on_progress=on_progress)
    else:
        llm = client.llm.model("%s")
        for _ in llm.respond_stream("Write a long story about a river."):
            print("progress", flush=True)
    print("not interrupted", flush=True)

client = Client(sys.argv[1])
try:
    asyncio.run(main(client))
except KeyboardInterrupt:
    print("interrupted", flush=True)
    client.close()
    sys.exit(130)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("call", ["load", "stream"])
@pytest.mark.lmstudio_server(load_seconds=10.0, tokens_per_second=20.0)
def test_ctrl_c_under_asyncio_run_cancels_a_sync_call_at_once(
    lmstudio_server: ThreadedStandInServer, call: str
) -> None:
    if call == "stream":
        lmstudio_server.preload(SMOL)
    script = _IN_ASYNCIO_RUN_SCRIPT % (LLAMA, SMOL)
    # One Ctrl-C, answered at once: not after the 10 s load or the whole reply.
    last = _ctrl_c_after_the_first_progress(script, lmstudio_server.host, call, within=5)
    assert last == "interrupted"
    eventually(lambda: lmstudio_server.cancel_count == 1)
    eventually(lambda: lmstudio_server.open_channel_count() == 0)
    loaded = [i.identifier for i in lmstudio_server.loaded_instances()]
    assert loaded == ([SMOL] if call == "stream" else [])


def test_a_config_mismatch_warning_is_issued_in_the_callers_thread_at_its_line(
    client: Client, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload(LLAMA, config={"llm.load.contextLength": 2048})
    seen: list[tuple[str, str]] = []
    original = warnings.showwarning

    def show(message: Any, category: Any, filename: str, *args: Any, **kwargs: Any) -> None:
        seen.append((filename, threading.current_thread().name))

    with warnings.catch_warnings():
        warnings.simplefilter("always", lms.ConfigMismatchWarning)
        warnings.showwarning = show
        try:
            client.llm.model(LLAMA, config={"context_length": 4096})
        finally:
            warnings.showwarning = original
    assert seen == [(__file__, threading.current_thread().name)]
