"""The ``lmstudio-async`` CLI, driven in-process against the stand-in (``lmstudio_server``)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys

import pytest

import lmstudio_async as lms
from lmstudio_async.cli import Output, format_bytes, format_seconds, main
from lmstudio_async.testing import ThreadedStandInServer, default_catalog
from lmstudio_async.testing import main as standin_main

SMOL = "smollm2-135m-instruct"
LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
TOKEN = "sk-lm-abcd1234:abcdefghij0123456789"


def run(
    server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = main(["--host", server.host, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(err: str) -> None:
    assert err.startswith("error: ")
    assert "Traceback" not in err
    assert err.count("\n") == 1


# --- ls / ps ---------------------------------------------------------------------------------


def test_ls_table(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(lmstudio_server, capsys, "ls")
    assert (code, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "TYPE", "SIZE", "PARAMS", "QUANT", "MAX", "CONTEXT"]
    smol = next(r for r in rows if r.startswith(SMOL)).split()
    assert smol == [SMOL, "llm", "138.10", "MiB", "135M", "Q8_0", "8192"]
    assert any(r.startswith(NOMIC) and " embedding " in r for r in rows)


def test_ls_json(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(lmstudio_server, capsys, "ls", "--json")
    assert code == 0
    models = json.loads(out)
    keys = {m["modelKey"]: m for m in models}
    assert keys[SMOL]["type"] == "llm"
    assert keys[NOMIC]["type"] == "embedding"
    assert keys[SMOL]["quantization"]["name"] == "Q8_0"


def test_ps_empty(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(lmstudio_server, capsys, "ps") == (0, "No models are loaded.\n", "")
    code, out, _ = run(lmstudio_server, capsys, "ps", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_ps_lists_both_domains_with_ttl(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    lmstudio_server.preload(SMOL, identifier="small", ttl_ms=600_000)
    lmstudio_server.preload(NOMIC)
    code, out, _ = run(lmstudio_server, capsys, "ps")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["IDENTIFIER", "MODEL", "TYPE", "CONTEXT", "TTL", "LEFT", "SIZE"]
    small = lines[1].split()
    assert small[:3] == ["small", SMOL, "llm"]
    assert small[4] in {"10m00s", "9m59s"}
    assert lines[2].split()[:3] == [NOMIC, NOMIC, "embedding"]
    assert lines[2].split()[4] == "-"

    code, out, _ = run(lmstudio_server, capsys, "ps", "--json")
    data = {item["identifier"]: item for item in json.loads(out)}
    assert 599 <= data["small"]["ttlRemainingSeconds"] <= 600
    assert data["small"]["ttlMs"] == 600_000
    assert data[NOMIC]["ttlRemainingSeconds"] is None


# --- load ----------------------------------------------------------------------------------


def test_load_with_options(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        lmstudio_server,
        capsys,
        "load",
        SMOL,
        "--identifier",
        "mine",
        "--context-length",
        "2048",
        "--gpu",
        "0.5",
        "--ttl",
        "300",
    )
    assert (code, err) == (0, "")
    assert "Loading smollm2-135m-instruct as mine: 0%" in out
    assert "100%" in out
    assert "Loaded mine (smollm2-135m-instruct, context 2048, TTL 5m00s)" in out
    [inst] = lmstudio_server.loaded_instances()
    assert (inst.identifier, inst.context_length, inst.ttl_ms) == ("mine", 2048, 300_000)


@pytest.mark.parametrize("estimate_only", [False, True])
def test_load_with_the_largest_context_length(
    lmstudio_server: ThreadedStandInServer,
    capsys: pytest.CaptureFixture[str],
    estimate_only: bool,
) -> None:
    most = next(m["maxContextLength"] for m in default_catalog() if m["modelKey"] == SMOL)
    extra = ["--estimate-only"] if estimate_only else []
    code, out, err = run(lmstudio_server, capsys, "load", SMOL, "-c", "max", *extra)
    assert (code, err) == (0, "")
    if estimate_only:
        assert f"Estimate for {SMOL}:" in out
        assert lmstudio_server.loaded_instances() == []
    else:
        assert f"context {most}" in out
        [inst] = lmstudio_server.loaded_instances()
        assert inst.context_length == most


def test_load_embedding_model_picks_the_domain(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(lmstudio_server, capsys, "load", NOMIC, "--gpu", "max")
    assert (code, err) == (0, "")
    [inst] = lmstudio_server.loaded_instances()
    assert inst.domain == "embedding"


def test_load_twice_gets_automatic_identifier(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(lmstudio_server, capsys, "load", SMOL)[0] == 0
    code, out, _ = run(lmstudio_server, capsys, "load", SMOL)
    assert code == 0
    assert f"Loaded {SMOL}:2 " in out


def test_load_estimate_only(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(lmstudio_server, capsys, "load", LLAMA, "--estimate-only", "-c", "8192")
    assert code == 0
    assert out.startswith(f"Estimate for {LLAMA}:")
    assert "fits:    yes" in out
    assert lmstudio_server.loaded_instances() == []


def test_load_unknown_model(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(lmstudio_server, capsys, "load", "no-such-model")
    assert code == 1
    assert "failed" in out
    assert_clean_error(err)
    assert "No downloaded model matches 'no-such-model'" in err
    assert SMOL in err  # names what is available


def test_load_duplicate_identifier(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    lmstudio_server.preload(SMOL, identifier="taken")
    code, _, err = run(lmstudio_server, capsys, "load", SMOL, "--identifier", "taken")
    assert code == 1
    assert_clean_error(err)
    assert '"taken" already exists' in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["load", SMOL, "--gpu", "2"], "between 0 and 1"),
        (["load", SMOL, "--gpu", "lots"], "'max' or 'off'"),
        (["load", SMOL, "--context-length", "0"], "positive"),
        (["load", SMOL, "--ttl", "soon"], "seconds"),
        (["load", SMOL, "--ttl", "nan"], "argument --ttl: expected a finite number"),
        (["load", SMOL, "--ttl", "inf"], "argument --ttl: expected a finite number"),
        (["load", SMOL, "--ttl", "1e300"], "argument --ttl: at most 31536000 seconds"),
        (["load", ""], "argument KEY: must not be empty"),
        (["load", SMOL, "--identifier", ""], "argument --identifier: must not be empty"),
        (["unload", " "], "argument ID: must not be empty"),
        (["get", ""], "argument KEY: must not be empty"),
        (["get", "smol", "--quant", ""], "argument --quant: must not be empty"),
        (["demo", "--load-seconds", "-1"], "argument --load-seconds: expected between 0 and 60"),
        (["demo", "--load-seconds", "nan"], "argument --load-seconds: expected a finite"),
        (["demo", "--load-seconds", "inf"], "argument --load-seconds: expected a finite"),
        (["frobnicate"], "invalid choice"),
        (["--host", "localhost", "ls"], "needs an explicit port"),
        (["--host", "bad:port::", "ps"], "more than one ':'"),
        ([], "required"),
    ],
)
def test_bad_arguments(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_demo_or_server(monkeypatch)  # an accepted bad value fails the test, without hanging it
    # A host where nothing listens: a bad argument is reported before connecting.
    assert main(["--host", f"127.0.0.1:{_closed_port()}", *args] if args else args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def _no_demo_or_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo and the stand-in server return at once instead of running."""
    import lmstudio_async.cli.demo as demo
    import lmstudio_async.testing as testing
    import lmstudio_async.testing._cli as standin_cli

    async def run_demo(*args: object, **kwargs: object) -> int:
        return 0

    async def serve(*args: object, **kwargs: object) -> None:
        pass

    monkeypatch.setattr(demo, "run_demo", run_demo)
    monkeypatch.setattr(testing, "serve", serve)
    monkeypatch.setattr(standin_cli, "serve", serve)


def test_unload_identifier_and_all_is_a_usage_error_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--host", f"127.0.0.1:{_closed_port()}", "unload", "chat", "--all"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lmstudio-async unload")
    assert "error: give either an identifier or --all, not both" in err
    assert "connect" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory-gb", "inf"], "argument --memory-gb: expected a finite number of GB"),
        (["--memory-gb", "nan"], "argument --memory-gb: expected a finite number of GB"),
        (["--memory-gb", "1e300"], "argument --memory-gb: must be at most 1000000 GB"),
        (["--memory-gb", "0"], "argument --memory-gb: must be positive"),
        (["--device", "box:inf"], "device 'box' must be a finite number of GB"),
        (["--device", "box:1e300"], "device 'box' must be at most 1000000 GB"),
        (["--jit-ttl", "inf"], "argument --jit-ttl: expected a finite number of seconds"),
        (["--load-seconds", "nan"], "argument --load-seconds: expected a finite number"),
        (["--load-seconds", "-1"], "argument --load-seconds: must be >= 0"),
        (["--download-mb-per-second", "inf"], "argument --download-mb-per-second: expected a"),
        (["--tokens-per-second", "inf"], "argument --tokens-per-second: expected a finite"),
        (["--port", "70000"], "argument --port: must be between 0 and 65535"),
    ],
)
def test_stand_in_refuses_bad_numbers(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both command lines of the stand-in: `lmstudio-async serve` and its own."""
    _no_demo_or_server(monkeypatch)
    assert main(["serve", "--port", "0", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as exited:
        standin_main(["--port", "0", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# --- unload -------------------------------------------------------------------------------


def test_unload_the_only_model(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    lmstudio_server.preload(NOMIC, identifier="emb")
    assert run(lmstudio_server, capsys, "unload") == (0, "Unloaded emb\n", "")
    assert lmstudio_server.loaded_instances() == []


def test_unload_nothing_loaded(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(lmstudio_server, capsys, "unload") == (0, "No models are loaded.\n", "")


def test_unload_ambiguous_lists_loaded(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    lmstudio_server.preload(SMOL, identifier="a")
    lmstudio_server.preload(SMOL, identifier="b")
    code, out, err = run(lmstudio_server, capsys, "unload")
    assert (code, out) == (1, "")
    assert_clean_error(err)
    assert "2 models are loaded" in err
    assert "loaded: a, b" in err
    assert len(lmstudio_server.loaded_instances()) == 2


def test_unload_by_identifier_and_all(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    lmstudio_server.preload(SMOL, identifier="a")
    lmstudio_server.preload(SMOL, identifier="b")
    lmstudio_server.preload(NOMIC, identifier="c")
    assert run(lmstudio_server, capsys, "unload", "b") == (0, "Unloaded b\n", "")
    code, out, _ = run(lmstudio_server, capsys, "unload", "--all")
    assert (code, out) == (0, "Unloaded a\nUnloaded c\n")
    assert lmstudio_server.loaded_instances() == []


def test_unload_unknown_identifier(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    lmstudio_server.preload(SMOL, identifier="a")
    code, _, err = run(lmstudio_server, capsys, "unload", "zzz")
    assert code == 1
    assert_clean_error(err)
    assert "No loaded model has identifier 'zzz' (loaded: a)" in err


# --- host, token, connection errors ------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_host(capsys: pytest.CaptureFixture[str]) -> None:
    host = f"127.0.0.1:{_closed_port()}"
    assert main(["--host", host, "ps"]) == 1
    captured = capsys.readouterr()
    assert_clean_error(captured.err)
    assert host in captured.err


def test_host_from_environment(
    lmstudio_server: ThreadedStandInServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LMSTUDIO_API_HOST", lmstudio_server.host)
    assert main(["ps"]) == 0
    assert capsys.readouterr().out == "No models are loaded.\n"


@pytest.mark.lmstudio_server(api_token=TOKEN)
def test_api_token(
    lmstudio_server: ThreadedStandInServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LMSTUDIO_API_TOKEN", raising=False)
    wrong = "sk-lm-abcd1234:zzzzzzzzzzzzzzzzzzzz"
    code, _, err = run(lmstudio_server, capsys, "--api-token", wrong, "ps")
    assert code == 1
    assert_clean_error(err)
    assert wrong not in err
    assert "zzzz" not in err
    assert run(lmstudio_server, capsys, "--api-token", TOKEN, "ps")[0] == 0
    monkeypatch.setenv("LMSTUDIO_API_TOKEN", TOKEN)
    assert run(lmstudio_server, capsys, "ps")[0] == 0


@pytest.mark.parametrize("where", ["option", "environment"])
def test_a_malformed_api_token_is_a_usage_error_before_connecting(
    where: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "garbage-token-1234"
    monkeypatch.delenv("LMSTUDIO_API_TOKEN", raising=False)
    args = ["--host", "127.0.0.1:1", "ps"]  # nothing listens there: no connection is tried
    if where == "option":
        args = ["--api-token", secret, *args]
    else:
        monkeypatch.setenv("LMSTUDIO_API_TOKEN", secret)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lmstudio-async ")
    assert "malformed: LM Studio tokens look like 'sk-lm-" in err
    assert ("$LMSTUDIO_API_TOKEN" in err) == (where == "environment")
    assert secret not in err


# --- serve / misc ------------------------------------------------------------------------------


def test_serve_reuses_the_stand_in_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--port", "--load-seconds", "--memory-gb", "--catalog", "--api-token"):
        assert option in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("lmstudio-async ")


# --- output ----------------------------------------------------------------------------------


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_on_a_terminal_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    stream = _FakeTTY()
    out = Output(stream)
    assert not out.fancy
    out.table(["A", "BB"], [["xyz", "1"]])
    with out.progress("loading") as report:
        for step in (0.0, 0.3, 0.6, 1.0):
            report(step)
    assert stream.getvalue() == "A    BB\nxyz  1\n  loading: 0% 25% 50% 100%\n"


def test_rich_output() -> None:
    pytest.importorskip("rich")
    stream = _FakeTTY()
    out = Output(stream, fancy=True)
    out.heading("Title")
    out.table(["KEY", "SIZE"], [["model-a", "1 GiB"]])
    with out.progress("loading") as report:
        report(0.5)
        report(1.0)
    text = stream.getvalue()
    assert "Title" in text
    assert "model-a" in text
    assert "100%" in text


def test_formatters() -> None:
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(5 * 1024**4) == "5120.00 GiB"
    assert format_seconds(None) == "-"
    assert format_seconds(-3) == "0.0s"
    assert format_seconds(4.25) == "4.2s"
    assert format_seconds(75) == "1m15s"
    assert format_seconds(7300) == "2h01m"


# --- model keys --------------------------------------------------------------------------------


def test_load_ambiguous_key_refuses_and_lists_the_candidates(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # The start of the paths of smollm2-135m-instruct and qwen2.5-7b-instruct-1m.
    for extra in ([], ["--estimate-only"]):
        code, out, err = run(lmstudio_server, capsys, "load", "lmstudio-community", *extra)
        assert (code, out) == (1, "")
        assert_clean_error(err)
        assert "'lmstudio-community' matches 2 downloaded models" in err
        assert f"{SMOL}, qwen2.5-7b-instruct-1m" in err
    assert lmstudio_server.loaded_instances() == []
    # A prefix that names one model, and a full path, still load it.
    assert run(lmstudio_server, capsys, "load", "lmstudio-community/SmolLM2")[0] == 0
    [inst] = lmstudio_server.loaded_instances()
    assert inst.model_key == SMOL


def _catalog_with_indexed_embedding() -> list[dict[str, object]]:
    """An embedding model whose indexedModelIdentifier differs from its path."""
    from lmstudio_async.testing import default_catalog

    embedding = next(m for m in default_catalog() if m["type"] == "embedding")
    embedding.update(
        modelKey="text-embedding-acme",
        path="local/acme-embed.gguf",
        indexedModelIdentifier="acme-org/acme-embed-GGUF/acme-embed.gguf",
    )
    return [embedding]


@pytest.mark.lmstudio_server(catalog=_catalog_with_indexed_embedding())
def test_load_by_indexed_model_identifier_picks_the_domain(
    lmstudio_server: ThreadedStandInServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(lmstudio_server, capsys, "load", "acme-org/acme-embed-GGUF/acme-embed")
    assert (code, err) == (0, "")
    assert "Loaded text-embedding-acme (text-embedding-acme," in out
    [inst] = lmstudio_server.loaded_instances()
    assert inst.domain == "embedding"


# --- global options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "127.0.0.1:1234", "serve"], "the global --host is the LM Studio to connect"),
        (
            ["--api-token", TOKEN, "serve", "--api-token", "sk-lm-zzzz1234:abcdefghij0123456789"],
            "two different API tokens",
        ),
        (["--host", "127.0.0.1:1234", "demo"], "--host does not apply"),
        (["--api-token", TOKEN, "demo"], "--api-token does not apply"),
        (
            ["--host", "127.0.0.1:1234", "--api-token", TOKEN, "demo"],
            "--host and --api-token do not apply",
        ),
    ],
)
def test_global_options_that_do_not_apply_are_refused(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_demo_or_server(monkeypatch)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lmstudio-async ")
    assert message in err


def test_global_api_token_is_the_token_serve_requires(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    import lmstudio_async.testing as testing

    tokens: list[str | None] = []
    build = testing.server_from_args

    def server_from_args(ns: argparse.Namespace) -> testing.StandInServer:
        tokens.append(ns.api_token)
        return build(ns)

    async def serve(server: testing.StandInServer, *, announce: bool = True) -> None:
        pass

    monkeypatch.setattr(testing, "server_from_args", server_from_args)
    monkeypatch.setattr(testing, "serve", serve)
    assert main(["--api-token", TOKEN, "serve", "--port", "0"]) == 0
    assert main(["--api-token", TOKEN, "serve", "--port", "0", "--api-token", TOKEN]) == 0
    assert main(["serve", "--port", "0", "--api-token", TOKEN]) == 0
    assert main(["serve", "--port", "0"]) == 0
    assert tokens == [TOKEN, TOKEN, TOKEN, None]


def test_empty_host_variable_is_unset(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lmstudio_async.cli.commands as commands
    from lmstudio_async.errors import LMStudioConnectionError

    hosts: list[str | None] = []

    def client(api_host: str | None, *, api_token: str | None) -> lms.AsyncClient:
        hosts.append(api_host)
        raise LMStudioConnectionError("stop here", host=api_host)

    monkeypatch.setattr(commands, "AsyncClient", client)
    monkeypatch.setenv("LMSTUDIO_API_HOST", " ")
    assert main(["ps"]) == 1
    assert hosts == [None]  # the SDK then probes the local ports
    assert capsys.readouterr().err == "error: stop here\n"
    monkeypatch.setenv("LMSTUDIO_API_HOST", "localhost:1234")
    assert main(["ps"]) == 1
    assert hosts == [None, "localhost:1234"]
    capsys.readouterr()
    monkeypatch.setenv("LMSTUDIO_API_HOST", "nonsense")
    assert main(["ps"]) == 2
    err = capsys.readouterr().err
    assert "error: $LMSTUDIO_API_HOST: api_host 'nonsense' needs an explicit port" in err
    assert "argument --host" not in err


def test_not_running_hint_names_the_cli_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LMSTUDIO_API_HOST", raising=False)
    monkeypatch.setattr("lmstudio_async._io.transport.DEFAULT_PORTS", (_closed_port(),))
    assert main(["ps"]) == 1
    err = capsys.readouterr().err
    assert_clean_error(err)
    assert "LM Studio is not running on this machine" in err
    assert "pass --host or set LMSTUDIO_API_HOST" in err
    assert "api_host=" not in err


def test_credentials_in_host_hint_names_the_cli_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "user:secret@localhost:1234", "ps"]) == 2
    err = capsys.readouterr().err
    assert "pass --api-token instead" in err
    assert "secret" not in err


LONG_ID = "an-instance-identifier-that-is-longer-than-eighty-columns-on-its-own-line-123456"


def _rich_terminal(monkeypatch: pytest.MonkeyPatch, columns: int = 80) -> _FakeTTY:
    """Make stdout a terminal of ``columns`` columns, so that the CLI uses rich."""
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", str(columns))
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stdout", stream)
    return stream


@pytest.mark.parametrize("command", ["ls", "ps"])
def test_json_on_a_rich_terminal_is_not_wrapped(
    command: str, lmstudio_server: ThreadedStandInServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lmstudio_server.preload(NOMIC, identifier=LONG_ID)  # longer than the terminal is wide
    stream = _rich_terminal(monkeypatch)
    assert main(["--host", lmstudio_server.host, command, "--json"]) == 0
    text = stream.getvalue()
    assert "\x1b[" not in text
    items = json.loads(text)
    assert any(item["modelKey"] == NOMIC for item in items)
    if command == "ps":
        assert [item["identifier"] for item in items] == [LONG_ID]


def test_tables_on_a_narrow_rich_terminal_keep_keys_whole(
    lmstudio_server: ThreadedStandInServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lmstudio_server.preload(NOMIC)
    lmstudio_server.preload(NOMIC, identifier=LONG_ID)
    stream = _rich_terminal(monkeypatch)
    assert main(["--host", lmstudio_server.host, "ls"]) == 0
    assert main(["--host", lmstudio_server.host, "ps"]) == 0
    text = stream.getvalue()
    assert "…" not in text
    rows = [line.split() for line in text.splitlines()]
    assert [NOMIC, "embedding"] in (row[:2] for row in rows)  # ls: KEY, TYPE
    assert [NOMIC, NOMIC, "embedding"] in (row[:3] for row in rows)  # ps: IDENTIFIER, MODEL
    assert [LONG_ID, NOMIC, "embedding"] in (row[:3] for row in rows)


@pytest.mark.parametrize("bind", ["::1", "127.0.0.1"])
def test_ready_line_brackets_an_ipv6_host(bind: str) -> None:
    from lmstudio_async._io.transport import parse_api_host
    from lmstudio_async.testing._cli import ready_url

    try:
        server = ThreadedStandInServer(0, host=bind).start()
    except OSError:
        pytest.skip(f"cannot listen on {bind}")
    try:
        expected = f"[{bind}]" if ":" in bind else bind
        assert ready_url(server) == f"http://{expected}:{server.port}"
        assert server.host == f"{expected}:{server.port}"
        assert parse_api_host(ready_url(server))[0] == ready_url(server)
        with lms.Client(ready_url(server)) as client:  # pasted as a client's host, it works
            assert client.system.version()
    finally:
        server.stop()


def test_ctrl_c_while_starting_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lmstudio_async.cli.commands as commands

    def interrupted(*, serve_options: bool = True) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "build_parser", interrupted)
    try:
        code = main(["ps"])
    except KeyboardInterrupt:  # would stop pytest itself
        pytest.fail("KeyboardInterrupt escaped main()")
    assert code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_only_serve_imports_the_stand_in() -> None:
    code = (
        "import sys\n"
        "from lmstudio_async.cli import main\n"
        "assert main(['--version']) == 0\n"
        "assert main(['load', '--help']) == 0\n"
        "print('stand-in imported:', 'lmstudio_async.testing' in sys.modules)\n"
        "assert main(['serve', '--help']) == 0\n"
        "print('stand-in imported:', 'lmstudio_async.testing' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    imported = [line for line in proc.stdout.splitlines() if line.startswith("stand-in")]
    assert imported == ["stand-in imported: False", "stand-in imported: True"]
