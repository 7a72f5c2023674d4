"""The layer picture of docs/architecture.md, checked on the source with ``ast``.

Three rules over every ``import`` in ``python/loom``:

- no cycle among module-level imports (``if TYPE_CHECKING:`` blocks count: a type is
  a dependency too);
- no import of a higher layer, anywhere (a function-level import defers the cost, it
  does not make the dependency go away);
- no private name (``_x``) imported from another subpackage.

Each rule is also run on a small fake package, so the test can be seen to fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "python"

#: Bottom to top. A module belongs to the first entry that is it or its package.
LAYERS: list[tuple[str, ...]] = [
    # 0: the foundation: errors, configuration, the in-process bus
    (
        "loom._core",
        "loom.errors",
        "loom._version",
        "loom._text",
        "loom._secrets",
        "loom._envvars",
        "loom._depth",
        "loom._host",
        "loom._aio",
        "loom._units",
        "loom._effects",
        "loom.bus",
        "loom.config",
        "loom._layout",
        "loom._toml",
        "loom.prompts",
    ),
    # 1: OpenTelemetry vocabulary (spans, metrics, exporters)
    ("loom.telemetry",),
    # 2: the LLM client
    ("loom.llm",),
    # 3: tools, the NATS bridge, the key-value store, the whole-project check
    (
        "loom.tools",
        "loom.nats",
        "loom.kv",
        "loom.durable",
        "loom.project_check",
        "loom.dashboard.settings",
    ),
    # 4: the runtime (knows agents only through a Protocol)
    ("loom.runtime",),
    # 5: agents and what they use of the runtime
    ("loom._dispatch", "loom.collab", "loom.inbox", "loom.journaled", "loom.context", "loom.agent"),
    # 6: what is built from agents: apps, patterns, test doubles
    (
        "loom.app",
        "loom.loader",
        "loom.scripts",
        "loom.testing",
        "loom.patterns",
        "loom.cognitive",
        "loom.templates",
        "loom.dashboard",
    ),
    # 7: the command line
    ("loom.cli", "loom.__main__"),
    # 8: the package facade (``import loom``); nothing inside imports it
    ("loom",),
]


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved to a module of the package)
    names: tuple[str, ...]  # names taken from it (empty for ``import x``)
    toplevel: bool  # module level (including ``if TYPE_CHECKING:``)
    line: int


def modules(root: Path, package: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(mods: Iterable[str], name: str) -> str | None:
    known = set(mods)
    while name and name not in known:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name or None


def _module_level(body: list[ast.stmt]) -> set[int]:
    """Ids of the statements that run on import (inside ``if``/``try`` included)."""
    found: set[int] = set()
    for node in body:
        found.add(id(node))
        if isinstance(node, ast.If):
            found |= _module_level(node.body) | _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            found |= _module_level(node.body) | _module_level(node.orelse)
            found |= _module_level(node.finalbody)
            for h in node.handlers:
                found |= _module_level(h.body)
    return found


def imports(root: Path, package: str, extra: Iterable[str] = ()) -> Iterator[Import]:
    mods = modules(root, package)
    known = set(mods) | set(extra)
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        toplevel = _module_level(tree.body)
        for node in ast.walk(tree):
            top = id(node) in toplevel
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _resolve(known, alias.name)
                    if target and target.split(".")[0] == package:
                        yield Import(mod, target, (), top, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                if origin.split(".")[0] != package:
                    continue
                for alias in node.names:
                    full = f"{origin}.{alias.name}"
                    if full in known:  # a submodule: ``from loom import _core``
                        yield Import(mod, full, (), top, node.lineno)
                    else:
                        target = _resolve(known, origin)
                        if target:
                            yield Import(mod, target, (alias.name,), top, node.lineno)


def layer_of(mod: str, layers: list[tuple[str, ...]]) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, prefixes in enumerate(layers):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), i)
    if best is None:
        raise AssertionError(f"{mod} is in no layer: add it to LAYERS")
    return best[1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def subpackage(mod: str) -> str:
    """``loom.llm._http`` -> ``loom.llm``; modules at the top belong to ``loom``."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def _owner(target: str, packages: set[str]) -> str:
    # A subpackage's own __init__ owns its names: ``loom.llm`` -> ``loom.llm``.
    return target if target in packages else subpackage(target)


def problems(root: Path, package: str, layers: list[tuple[str, ...]]) -> list[str]:
    found = list(imports(root, package, extra=[f"{package}._core"]))
    packages = {m for m, p in modules(root, package).items() if p.name == "__init__.py"}
    out: list[str] = []
    edges: dict[str, set[str]] = {}
    for imp in found:
        if imp.target == imp.source:
            continue
        if imp.toplevel:
            edges.setdefault(imp.source, set()).add(imp.target)
        src, dst = layer_of(imp.source, layers), layer_of(imp.target, layers)
        if dst > src:
            out.append(
                f"{imp.source}:{imp.line} imports {imp.target} (layer {dst}) from layer {src}"
            )
        private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        if imp.target.rsplit(".", 1)[-1].startswith("_"):
            private.append(imp.target)
        owner = _owner(imp.target, packages)
        for name in private:
            if name == f"{package}._core":
                continue
            if owner != package and owner != subpackage(imp.source) and owner != imp.source:
                out.append(f"{imp.source}:{imp.line} imports private {name} of {owner}")
    for comp in cycles(edges):
        out.append("import cycle: " + " -> ".join(comp))
    return out


def test_loom_has_layers_without_cycles() -> None:
    assert problems(SRC, "loom", LAYERS) == []


# -- the checker itself can fail -----------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


FAKE_LAYERS: list[tuple[str, ...]] = [("pkg.low", "pkg._core"), ("pkg.high",), ("pkg",)]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a cycle through TYPE_CHECKING
            {
                "pkg/low/a.py": "from pkg.low import b\n",
                "pkg/low/b.py": (
                    "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from pkg.low.a import X\n"
                ),
            },
            "import cycle: pkg.low.a -> pkg.low.b",
        ),
        (  # a lower layer importing a higher one, even lazily
            {
                "pkg/high/h.py": "",
                "pkg/low/a.py": "def f():\n    from pkg.high import h\n",
            },
            "pkg.low.a:2 imports pkg.high.h (layer 1) from layer 0",
        ),
        (  # a private name of another subpackage
            {
                "pkg/low/__init__.py": "",
                "pkg/low/_impl.py": "_state = 1\n",
                "pkg/high/h.py": "from pkg.low._impl import _state\n",
            },
            "pkg.high.h:1 imports private _state of pkg.low",
        ),
        (  # a relative import counts as well
            {"pkg/low/a.py": "from . import b\n", "pkg/low/b.py": "from .a import f\n"},
            "import cycle: pkg.low.a -> pkg.low.b",
        ),
    ],
)
def test_the_checker_catches(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    _write(tmp_path, {"pkg/__init__.py": "", **files})
    assert expected in problems(tmp_path, "pkg", FAKE_LAYERS)


def test_the_checker_accepts_a_clean_package(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.high import h\n",
            "pkg/low/__init__.py": "",
            "pkg/low/_impl.py": "_state = 1\n",
            "pkg/low/a.py": "from pkg.low._impl import _state\nfrom pkg import _core\n",
            "pkg/high/h.py": "from pkg.low import a\n",
        },
    )
    assert problems(tmp_path, "pkg", FAKE_LAYERS) == []
