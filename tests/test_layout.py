"""The layout's doors (docs/architecture.md), checked on the import graph of checkpoint/.

Read from the source with `ast`, so nothing is imported: a module-level import cycle, a
pure-core module importing an I/O library, or a room importing a room above it fails
here with the offending import named.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parents[1] / "checkpoint"

IO_LIBS = {
    "serial", "paho", "gpiozero", "lgpio", "sqlite3", "sqlite_utils", "socket", "aiohttp",
    "subprocess", "selectors", "select", "ssl", "http", "urllib", "asyncio", "threading",
}  # fmt: skip

# room -> rooms it must never import. "" is the shared modules at the top (errors, config,
# capture, mqtt, support, ...): every room may use them, and they use only the core.
FORBIDDEN = {
    "core": {"box", "field", "hq", "web", "cli"},
    "box": {"field", "hq", "web", "cli"},
    "field": {"hq", "cli"},
    "hq": {"box", "field", "web", "cli"},
    "web": {"field", "cli"},
    "": {"box", "field", "hq", "web", "cli"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG_DIR.rglob("*.py")):
        parts = ("checkpoint", *p.relative_to(PKG_DIR).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, at module level?, line) for every import in the file."""
    is_pkg = path.name == "__init__.py"
    out: list[tuple[str, bool, int]] = []

    def walk(node: ast.AST, nested: bool) -> None:
        for ch in ast.iter_child_nodes(node):
            inner = nested or isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test):
                continue
            if isinstance(ch, ast.Import):
                out.extend((a.name, not inner, ch.lineno) for a in ch.names)
            elif isinstance(ch, ast.ImportFrom):
                if ch.level:
                    base = name.split(".")[: len(name.split(".")) - ch.level + (1 if is_pkg else 0)]
                    mod = ".".join(base + ([ch.module] if ch.module else []))
                else:
                    mod = ch.module or ""
                for a in ch.names:
                    sub = f"{mod}.{a.name}"
                    out.append((sub if sub in MODULES else mod, not inner, ch.lineno))
            walk(ch, inner)

    walk(ast.parse(path.read_text()), False)
    return out


ROOMS = {"core", "box", "field", "hq", "web", "cli"}


def _room(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in ROOMS else ""


def test_the_layout_has_its_rooms():
    for room in ("core", "box", "field", "hq", "web", "cli"):
        assert (PKG_DIR / room / "__init__.py").is_file(), room


def _cycle(nested: bool) -> list[str] | None:
    """The first import cycle found; with `nested`, imports inside functions count too."""
    graph = {
        m: {t for t, top, _ in _imports(m, p) if (top or nested) and t in MODULES and t != m}
        for m, p in MODULES.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (found := visit(t)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_at_module_level():
    cycle = _cycle(nested=False)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_inside_a_function_dodges_a_cycle():
    # Imports inside functions keep heavy or optional libraries off a command's path;
    # none may be there to hide a cycle that hoisting it would close.
    cycle = _cycle(nested=True)
    assert cycle is None, "cycle through an import inside a function: " + " -> ".join(cycle or [])


def test_the_pure_core_imports_no_io_library():
    bad = [
        f"{m}:{line} imports {t}"
        for m, p in MODULES.items()
        if _room(m) == "core"
        for t, _, line in _imports(m, p)
        if t.split(".")[0] in IO_LIBS
    ]
    assert not bad, bad


def test_doors_open_one_way():
    bad = []
    for m, p in MODULES.items():
        room = _room(m)
        if m == "checkpoint.__main__":
            continue  # `python -m checkpoint` runs the CLI
        for t, _, line in _imports(m, p):
            if t.startswith("checkpoint.") and _room(t) and _room(t) in FORBIDDEN.get(room, ()):
                bad.append(f"{m}:{line} ({room}) imports {t} ({_room(t)})")
    assert not bad, bad


def test_nothing_imports_the_cli_but_the_entry_point():
    bad = [
        f"{m}:{line} imports {t}"
        for m, p in MODULES.items()
        if _room(m) != "cli" and m != "checkpoint.__main__"
        for t, _, line in _imports(m, p)
        if t.startswith("checkpoint.cli")
    ]
    assert not bad, bad
