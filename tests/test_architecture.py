"""The package's shape, checked statically: which imports must never exist, and how large a
module may grow. ARCHITECTURE.md draws the layers; this file keeps them true.

Imports are read from the source with :mod:`ast`, every one of them — those under
``if TYPE_CHECKING:`` and those inside functions too, since a cycle hidden there is still a
cycle a reader has to hold in their head."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "chenyu_assets"

#: Modules allowed over the 450-line bound, each with the size it may not exceed: the list may
#: only shrink (issue 18 restructures them). A module that grows past its entry, or a new one
#: past 450, fails here.
OVERSIZED: dict[str, int] = {
    "chenyu_assets.ark": 717,
    "chenyu_assets.watcher": 461,
}

#: Import cycles known today, each as its sorted member list; may only shrink.
KNOWN_CYCLES: list[list[str]] = []

MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a ``from pkg import sub`` counts as ``sub``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = [f"{target}.{alias.name}" for alias in node.names]
                named = [s for s in subs if s in modules]
                targets = named + ([target] if len(named) < len(subs) else [])
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_new_import_cycle() -> None:
    found = cycles(import_graph())
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, f"import cycles (TYPE_CHECKING imports count): {new}"
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"cycles fixed — remove them from KNOWN_CYCLES: {gone}"


def test_layers_point_down() -> None:
    graph = import_graph()
    for name, imports in graph.items():
        if name.startswith("chenyu_assets._core"):
            # the core knows no API family, no batch engine, no CLI, no emulator
            outside = {i for i in imports if not i.startswith("chenyu_assets._core")}
            assert outside <= _CORE_MAY_USE, (name, sorted(outside))
        if not name.startswith("chenyu_assets.emulator"):
            embeds = any(i.startswith("chenyu_assets.emulator") for i in imports)
            assert not embeds or name.startswith(_MAY_EMBED_THE_EMULATOR), (name, sorted(imports))


def test_the_batch_engine_uses_only_what_the_clients_publish() -> None:
    # errors.is_transient, limits.Slots/SlotPool/RedisLimits, the clients' protocol; of the
    # core only the log helpers, and the Redis work queue the shared Redis connection
    for name, imports in import_graph().items():
        if name.startswith("chenyu_assets.batch"):
            core = {i for i in imports if i.startswith("chenyu_assets._core")}
            allowed = {"chenyu_assets._core.logs"}
            if name == "chenyu_assets.batch.queue_store":
                allowed.add("chenyu_assets._core.redis_limits")
            assert core <= allowed, (name, sorted(core - allowed))


#: What ``_core`` may import outside itself: the error tree, events, log context and version.
_CORE_MAY_USE = {
    "chenyu_assets.errors",
    "chenyu_assets.events",
    "chenyu_assets._logctx",
    "chenyu_assets._version",
}
#: The CLI embeds the emulator (`--emulator`, `serve`); nothing else in the SDK may.
_MAY_EMBED_THE_EMULATOR = ("chenyu_assets.cli", "chenyu_assets._cli")


def test_no_module_outgrows_its_bound() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in _modules().items()
    }
    over = {n: s for n, s in sizes.items() if s > OVERSIZED.get(n, MAX_LINES)}
    assert not over, f"modules over their bound (450, or their OVERSIZED entry): {over}"
    shrunk = {n: sizes[n] for n, bound in OVERSIZED.items() if sizes.get(n, 0) <= MAX_LINES}
    assert not shrunk, f"now within 450 lines — remove from OVERSIZED: {shrunk}"
