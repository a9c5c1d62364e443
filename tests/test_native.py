"""The compiled core (checkpoint/native.py) gives the same answers as the Python source,
and never runs when it does not match that source.

The equivalence test builds the core with mypyc (about 30 s here) unless a fresh build is
already in build/native, then replays the shipped scenarios' captures and an hour of a
u-blox M8 at factory settings in two fresh processes, one compiled and one pure, and
compares a digest of every event and of the clock's status and stamps between events.
Without mypy or a C compiler it skips, unless CHECKPOINT_REQUIRE_NATIVE=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoint import native
from sim import capture, scenario

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.replay import write_capture  # noqa: E402

DIGEST = REPO / "tests" / "replaydigest.py"
PROBE = (
    "import checkpoint.core.clock as c, checkpoint.core.timing as t, checkpoint.native as n;"
    "print(n.state); print(c.__file__); print(t.__file__)"
)


def _run(code_or_script: list[str], **env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("CHECKPOINT_PURE",)}
    full.update(env)
    done = subprocess.run(
        [sys.executable, *code_or_script],
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _fake_build(where: Path, sources: dict[str, str] | None = None) -> Path:
    """A build folder whose manifest claims `sources` (default: today's), with empty modules:
    enough for activation to judge it, never loaded."""
    import importlib.machinery

    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    root = where / native.tag()
    (root / "checkpoint" / "core").mkdir(parents=True)
    for m in native.MODULES:
        (root / "checkpoint" / "core" / f"{m}{suffix}").write_bytes(b"")
    manifest = {
        "ext_suffix": suffix,
        "sources": native._digests() if sources is None else sources,
    }
    (root / native.MANIFEST).write_text(json.dumps(manifest))
    return where


def test_without_a_build_the_python_source_runs(tmp_path):
    state, clock, timing = _run(["-c", PROBE], CHECKPOINT_NATIVE_DIR=str(tmp_path))
    assert state == f"python: no build in {tmp_path / native.tag()}"
    assert clock.endswith("checkpoint/core/clock.py")
    assert timing.endswith("checkpoint/core/timing.py")


def test_a_build_of_older_source_is_refused_naming_the_changed_files(tmp_path):
    sources = native._digests()
    sources["clock"] = "0" * 64
    sources["nmea"] = "1" * 64
    _fake_build(tmp_path, sources)
    state, clock, _ = _run(["-c", PROBE], CHECKPOINT_NATIVE_DIR=str(tmp_path))
    assert state == "python: the source changed since the build: clock.py, nmea.py"
    assert clock.endswith("clock.py")


def test_a_build_that_does_not_load_falls_back_to_python(tmp_path):
    # Today's hashes, but the modules are empty files: importing them would fail.
    _fake_build(tmp_path)
    state, clock, _ = _run(["-c", PROBE], CHECKPOINT_NATIVE_DIR=str(tmp_path))
    assert state.startswith(f"python: the build in {tmp_path / native.tag()} does not load")
    assert clock.endswith("clock.py")


def test_checkpoint_pure_wins_over_a_build(tmp_path):
    _fake_build(tmp_path)
    state, _, _ = _run(["-c", PROBE], CHECKPOINT_NATIVE_DIR=str(tmp_path), CHECKPOINT_PURE="1")
    assert state == "python: CHECKPOINT_PURE is set"


def test_status_and_usage_of_the_command(tmp_path):
    out = _run(["-m", "checkpoint.native", "status"], CHECKPOINT_NATIVE_DIR=str(tmp_path))
    assert out == [f"python: no build in {tmp_path / native.tag()}"]
    done = subprocess.run(
        [sys.executable, "-m", "checkpoint.native", "bogus"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "usage:" in done.stderr


@pytest.fixture(scope="session")
def native_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh build of today's source: build/native if it is one, else built here."""
    default = native.build_dir()
    if native._why_not(default) is None:
        return default.parent
    missing = None
    try:
        import mypy  # noqa: F401
    except ImportError:
        missing = "mypy is not installed (pip install -e '.[native]')"
    if missing is None and shutil.which("cc") is None and shutil.which("gcc") is None:
        missing = "no C compiler"
    if missing is not None:
        if os.environ.get("CHECKPOINT_REQUIRE_NATIVE") == "1":
            pytest.fail(f"cannot build the compiled core: {missing}", pytrace=False)
        pytest.skip(f"cannot build the compiled core: {missing}")
    root = tmp_path_factory.mktemp("native")
    native.build(root / native.tag())
    return root


@pytest.fixture(scope="session")
def captures(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every shipped scenario's captures (the Mille with its first 8 cars), and an hour of
    the Mille's first box, a u-blox M8 at factory settings (full windows, the wander test)."""
    out = tmp_path_factory.mktemp("captures")
    for path in sorted((REPO / "sim" / "scenarios").glob("*.toml")):
        sc = scenario.first_cars(scenario.load(path), 8)
        capture.write(sc, out / path.stem)
    hour = out / "hour.jsonl"
    write_capture(hour, 3600, cars=True)
    return [str(p) for p in sorted(out.glob("*/*.jsonl"))] + [str(hour)]


def test_the_compiled_core_replays_every_capture_exactly_as_python(native_dir, captures):
    assert len(captures) >= 10
    compiled = _run([str(DIGEST), *captures], CHECKPOINT_NATIVE_DIR=str(native_dir))
    pure = _run(
        [str(DIGEST), *captures], CHECKPOINT_NATIVE_DIR=str(native_dir), CHECKPOINT_PURE="1"
    )
    assert compiled[0] == "compiled"
    assert pure[0] == "python: CHECKPOINT_PURE is set"
    assert compiled[1:] == pure[1:]
    # The digests cover real work: every capture gave events.
    assert all(int(line.split()[1]) > 0 for line in pure[1:])


@pytest.mark.slow
@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_a_box_daemon_says_which_core_it_runs(tmp_path, broker, native_dir, monkeypatch, pure):
    from boxrig import BoxRig
    from faults import Watcher

    monkeypatch.setenv("CHECKPOINT_NATIVE_DIR", str(native_dir))
    if pure:
        monkeypatch.setenv("CHECKPOINT_PURE", "1")
    else:
        monkeypatch.delenv("CHECKPOINT_PURE", raising=False)
    rig = BoxRig(tmp_path, broker.url)
    sub = Watcher(broker.url, ["rally/box07/status"])
    rig.start()
    try:
        st = sub.wait_status(lambda s: s.get("state") == "ready", 30, "ready", since=0)
    finally:
        rig.close()
        sub.close()
    assert st["core"] == ("python" if pure else "compiled")
