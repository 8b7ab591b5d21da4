"""The package's import graph: no circle, and no import from a lower layer to a higher one.

Layers, lowest first: ``protocol`` (the tables); the core (the modules at the package
root: framing, decoding, session, filter, rendering; and ``dataplane``, whose ring state
the session keeps); ``capture`` (files); the faces (``proxy``, ``tui``, ``wireshark``,
``reproduce``, ``demo``, ``fuzz``, ``testing``, the Python ``api``); last the commands
(``commands``, ``read``, ``cli``).  Imports under
``if TYPE_CHECKING:`` are for annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vuinspect

ROOT = Path(vuinspect.__file__).parent
FACES = {"proxy", "tui", "wireshark", "reproduce", "demo", "fuzz", "testing", "api"}
COMMANDS = {"commands", "cli", "__main__", "read"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every import node, skipping ``if TYPE_CHECKING:`` blocks (iteratively)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names
                ]
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                # a module's own packages are imported before it anyway: not an edge
                if t in mods and t != name and not name.startswith(t + "."):
                    deps.add(t)
        graph[name] = deps
    return graph


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself: its public face (vuinspect.open)
        return 3, "api"
    top = parts[1]
    if top == "protocol":
        return 0, top
    if top == "capture":
        return 2, top
    if top in FACES:
        return 3, top
    if top in COMMANDS:
        return 4, top
    return 1, "core"


def test_no_import_circle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    circles = []
    counter = 0
    for start in graph:  # Tarjan's strongly connected components, without recursion
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        component.append(m)
                        if m == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    assert not circles, f"import circles: {circles}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = []
    for module, deps in _graph().items():
        rank, _ = _layer(module)
        for dep in deps:
            dep_rank, dep_group = _layer(dep)
            if dep_rank > rank:
                bad.append(f"{module} -> {dep}")
    assert not bad, "imports up the layers:\n" + "\n".join(sorted(bad))


def test_proxy_holds_sockets_only():
    """proxy/ forwards; it does not host the TUI nor the command line."""
    bad = [
        f"{m} -> {d}"
        for m, deps in _graph().items()
        if m.startswith("vuinspect.proxy.")
        for d in deps
        if _layer(d)[1] in ("tui", "cli", "commands")
    ]
    assert not bad, "\n".join(sorted(bad))


def test_the_graph_is_read():
    """The walker sees the package's real edges (a guard against a test that cannot fail)."""
    graph = _graph()
    assert "vuinspect.protocol.requests" in graph["vuinspect.decoder"]
    assert "vuinspect.capture" in graph["vuinspect.api"] or any(
        d.startswith("vuinspect.capture") for d in graph["vuinspect.api"]
    )
