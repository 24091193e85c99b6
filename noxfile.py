"""Developer sessions: ``nox -s tests lint typecheck bench docs`` (``pip install nox``)."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite (extra pytest arguments after ``--``)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and over typed user code (as CI runs it)."""
    session.install("-e", ".[test]", "mypy>=1.11")  # test: pytest, for the pytest plugin
    session.run("mypy", "--strict", "lmstudio_async", "tests/typing")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks against the bundled stand-in (``python -m benchmarks``), then the
    hop-cost comparison (``benchmarks/hop_cost.py``, which needs the ``bench`` extra)."""
    session.install("-e", ".[test,bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
    session.run("python", "benchmarks/hop_cost.py")


@nox.session
def bench_pool(session: nox.Session) -> None:
    """The model-pool benchmark: eviction against Belady, throughput against the naive
    approach and over two hosts (``python -m benchmarks.pool``; about 1.5 minutes)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks.pool", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Minutes of random multi-model traffic through a pool under injected faults
    (``python -m benchmarks.soak``; ``-- --seconds 20`` for the CI length)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "benchmarks.soak", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


OFFICIAL_SDK = "lmstudio==1.5.0"


@nox.session(python="3.11")
def official_suite(session: nox.Session) -> None:
    """The official lmstudio-python test suite (its sdist's tests/) against the stand-in.

    Needs port 41343 free. Known failures are strict xfails (tests/conformance/official_suite.py);
    extra pytest arguments after ``--`` (e.g. ``-- -k "tool or image or repository"``).
    """
    session.install(
        "-e",
        ".",
        OFFICIAL_SDK,
        "pytest>=8.3,<9",  # pytest 9 turns a deprecation in their parametrize into an error
        "pytest-asyncio>=0.24",
        "pytest-subtests>=0.13.1",
        "pytest-timeout>=2.3",
        "pydantic>=2",
    )
    tmp = session.create_tmp()
    session.run("pip", "download", "--no-deps", "--no-binary", ":all:", OFFICIAL_SDK, "-d", tmp)
    sdist = next(Path(tmp).glob("lmstudio-*.tar.gz"))
    session.run("python", "tests/conformance/official_suite.py", str(sdist), *session.posargs)
