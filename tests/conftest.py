"""Shared fixtures: a real Mosquitto broker per test, and the --soak switch."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sim.broker import Mosquitto, MosquittoNotInstalled, find_mosquitto


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="also run the long reliability tests marked 'soak'",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip_soak = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip_soak)


def _require_mosquitto() -> None:
    # CI installs mosquitto, so a missing broker is a broken setup and must fail
    # loudly; a skip would quietly drop every link test from the run.
    try:
        find_mosquitto()
        return
    except MosquittoNotInstalled as err:
        problem = str(err)
    # Outside the except block, so the report is one line, not a chained traceback.
    if os.environ.get("CHECKPOINT_ALLOW_NO_BROKER") == "1":
        pytest.skip(f"{problem} (CHECKPOINT_ALLOW_NO_BROKER=1)")
    pytest.fail(
        f"{problem}. The MQTT tests need a real broker; "
        "set CHECKPOINT_ALLOW_NO_BROKER=1 to skip them instead.",
        pytrace=False,
    )


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start extra brokers with their own options (acl_file, TLS listener, ...).

    Each gets a fresh workdir under tmp_path; all are stopped after the test.
    Keyword arguments go to `Mosquitto` (port, persistence, extra_conf).
    """
    _require_mosquitto()
    started: list[Mosquitto] = []

    def make(**kwargs: object) -> Mosquitto:
        workdir = tmp_path / f"mosquitto{len(started)}"
        broker = Mosquitto(workdir=workdir, **kwargs)  # type: ignore[arg-type]
        started.append(broker)
        return broker.start()

    yield make
    for broker in reversed(started):
        broker.stop()


@pytest.fixture
def broker(broker_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A started Mosquitto on a free loopback port (anonymous, no persistence)."""
    return broker_factory()
