"""The compiled core: the hot modules of checkpoint/core (MODULES), compiled by mypyc.

Why: every second of a box's life runs the same few hundred Python calls (13 NMEA records,
a pulse, a fit now and then). Compiled, the same source costs a box (and a replay) about
40 % less CPU (README, "Benchmarks"). It is optional: with no build, or with
``CHECKPOINT_PURE=1``, the pure-Python modules run, and both give the same events, bit for
bit (tests/test_native.py replays captures both ways and compares every event and status).

A build lives outside the source tree, in ``build/native/<python>-<machine>/`` beside the
``checkpoint`` package (or ``CHECKPOINT_NATIVE_DIR``), with a manifest holding the SHA-256
of each source file it was compiled from. `activate` uses a build only while every source
still matches it, so an edited module never runs stale compiled code: it runs as Python
until the next `build`.

Floats: the C compiler must not fuse a*b+c into one rounding (aarch64's default), or the
compiled clock would round differently from CPython; `build` passes -ffp-contract=off.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from checkpoint.errors import CheckpointError

#: The compiled modules of checkpoint.core: what runs per NMEA record and per pulse.
MODULES = (
    "regression",
    "segment",
    "wander",
    "clock",
    "nmea_time",
    "clockparams",
    "nmea",
    "pairing",
    "pulsegrid",
    "convention",
    "burst",
    "detector",
    "timing",
)
MANIFEST = "manifest.json"
#: The group library mypyc puts every compiled module in (a top-level extension module).
GROUP = "checkpoint_core"
_GROUP_LIB = GROUP + "__mypyc"

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
_CORE = _SOURCE_ROOT / "checkpoint" / "core"

#: What `activate` found: "compiled", or why the pure-Python core runs.
state = "python: not activated"


class NativeBuildError(CheckpointError):
    """The compiled core could not be built (no mypy, no C compiler, or a type error)."""


def tag() -> str:
    """The build's name: compiled code is only good for one Python and one machine kind."""
    return f"{sys.implementation.cache_tag}-{platform.machine()}"


def build_dir() -> Path:
    """Where the build for this Python lives (CHECKPOINT_NATIVE_DIR overrides the root)."""
    root = os.environ.get("CHECKPOINT_NATIVE_DIR")
    return (Path(root) if root else _SOURCE_ROOT / "build" / "native") / tag()


def _digests() -> dict[str, str]:
    return {m: hashlib.sha256((_CORE / f"{m}.py").read_bytes()).hexdigest() for m in MODULES}


def _why_not(where: Path) -> str | None:
    """None when the build at `where` matches this Python and today's source, else why not."""
    try:
        manifest = json.loads((where / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no build in {where}"
    except (OSError, ValueError) as e:
        return f"unreadable {where / MANIFEST}: {e}"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if manifest.get("ext_suffix") != suffix:
        return f"the build is for {manifest.get('ext_suffix')}, this Python loads {suffix}"
    stale = sorted(m for m, d in _digests().items() if manifest.get("sources", {}).get(m) != d)
    if stale:
        return "the source changed since the build: " + ", ".join(f"{m}.py" for m in stale)
    missing = [m for m in MODULES if not (where / "checkpoint" / "core" / f"{m}{suffix}").exists()]
    if missing:
        return "the build lacks " + ", ".join(missing)
    return None


def activate(core_path: list[str]) -> str:
    """Make `checkpoint.core` (whose ``__path__`` is `core_path`) import the compiled
    modules when a fresh build exists.

    checkpoint/core/__init__.py calls it, before any of MODULES can be imported.
    Returns (and keeps in `state`) "compiled" or the reason the Python modules run.
    """
    global state
    if os.environ.get("CHECKPOINT_PURE", "") not in ("", "0"):
        state = "python: CHECKPOINT_PURE is set"
        return state
    loaded = [m for m in MODULES if f"checkpoint.core.{m}" in sys.modules]
    if loaded:
        state = "python: imported before activation: " + ", ".join(loaded)
        return state
    where = build_dir()
    why = _why_not(where)
    if why is not None:
        state = f"python: {why}"
        return state
    sys.path.append(str(where))
    try:
        importlib.import_module(_GROUP_LIB)
    except ImportError as e:
        sys.path.remove(str(where))
        state = f"python: the build in {where} does not load: {e}"
        return state
    # The package looks in the build first, so each compiled module shadows its .py.
    core_path.insert(0, str(where / "checkpoint" / "core"))
    state = "compiled"
    return state


def loaded_by_a_new_process() -> str:
    """What a process started now would run: "compiled", or why the Python source.

    Asked of a fresh interpreter, since this one may have chosen before a build changed.
    """
    code = "import checkpoint.core; from checkpoint import native; print(native.state)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        return f"python: a new process failed to import the core: {done.stderr.strip()[-300:]}"
    return done.stdout.strip()


_SETUP = """
import sys
from setuptools import setup
from mypyc.build import mypycify

setup(
    name="checkpoint-core-native",
    script_args=["build_ext", "--build-lib", sys.argv[1], "--build-temp", sys.argv[2]],
    ext_modules=mypycify(
        # Imported modules that stay Python (config, contracts) are read for their
        # types only: their own typing is not the compiled core's business.
        ["--ignore-missing-imports", "--follow-imports=silent", "--cache-dir", sys.argv[3]]
        + sys.argv[5:],
        opt_level="3",
        group_name=sys.argv[4],
        target_dir=sys.argv[2],
    ),
)
"""


def build(dest: Path | None = None, *, quiet: bool = True) -> Path:
    """Compile MODULES with mypyc into `dest` (default `build_dir()`), replacing what is there.

    Needs mypy (the ``native`` extra) and a C compiler; raises NativeBuildError naming
    what is missing or what failed. The source is hashed first, so a file edited during
    the build makes the manifest stale rather than wrong.
    """
    dest = dest or build_dir()
    try:
        import mypy.version  # the build's compiler, named in the manifest
    except ImportError as e:
        raise NativeBuildError(
            "building the compiled core needs mypy: pip install -e '.[native]'"
        ) from e
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        raise NativeBuildError(f"building the compiled core needs a C compiler ({cc} not found)")
    digests = _digests()
    with tempfile.TemporaryDirectory(prefix="checkpoint-native-") as tmp:
        out, temp, cache = Path(tmp) / "out", Path(tmp) / "temp", Path(tmp) / "cache"
        script = Path(tmp) / "setup.py"
        script.write_text(_SETUP)
        env = dict(os.environ)
        env["CFLAGS"] = (env.get("CFLAGS", "") + " -ffp-contract=off").strip()
        sources = [str(_CORE / f"{m}.py") for m in MODULES]
        cmd = [sys.executable, str(script), str(out), str(temp), str(cache), GROUP, *sources]
        done = subprocess.run(
            # Not in the source root: setuptools would read our pyproject.toml there.
            cmd,
            cwd=tmp,
            env=env,
            capture_output=quiet,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stdout or "")[-3000:] + (done.stderr or "")[-3000:] if quiet else ""
            raise NativeBuildError(f"mypyc failed (exit {done.returncode}):\n{tail}".rstrip())
        manifest = {
            "python": sys.version,
            "ext_suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
            "mypy": mypy.version.__version__,
            "sources": digests,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(out, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m checkpoint.native [status | build [--force] [-v]]``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["build"]:
        where = build_dir()
        if "--force" not in args and _why_not(where) is None:
            print(f"compiled core up to date in {where}")
            return 0
        try:
            where = build(quiet="-v" not in args)
        except NativeBuildError as e:
            print(f"checkpoint.native: {e}", file=sys.stderr)
            return 1
        loads = loaded_by_a_new_process()
        print(f"compiled core built in {where}; a new process runs: {loads}")
        return 0 if loads == "compiled" else 1
    if args in ([], ["status"]):
        print(loaded_by_a_new_process())
        return 0
    print("usage: python -m checkpoint.native [status | build [--force] [-v]]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
