"""The package's layers, read from its import graph (every import, at the top or inside a function).

Data flows one way: a module may import modules of its own layer or of layers below it, never
above, and the graph has no cycle. A new module has to be placed in ``LAYERS`` to pass, which is
where a reader learns where it sits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "superres"

#: Bottom to top. A name covers the module and, for a package, everything in it.
LAYERS: list[tuple[str, ...]] = [
    ("superres.errors", "superres.scales", "superres.color", "superres.packages", "superres.progress",
     "superres.pngenc"),
    ("superres.io", "superres.resize", "superres.metrics", "superres.devices", "superres.metadata",
     "superres.threads"),
    ("superres.config", "superres.losses", "superres.models", "superres.data", "superres.backbones", "superres.perceptual",
     "superres.degrade", "superres.community", "superres.ncnn"),
    ("superres.modelfile", "superres.precision", "superres.speed"),
    ("superres.export",),
    ("superres.outputs", "superres.animation"),
    ("superres.inference", "superres.graphio"),
    ("superres.evaluate", "superres.peers", "superres.video"),
    ("superres.benchmark", "superres.compare"),
    ("superres.training",),
    ("superres.demo", "superres.serve"),
    ("superres.cli", "superres.__main__", "superres"),
]


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the superres modules it imports (``from a import b`` counts as ``a.b`` when that
    is a module, else as ``a``). Relative imports are resolved."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "superres")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "superres":
                    continue
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in files else target)
        deps.discard(name)
        graph[name] = deps
    return graph


def layer_of(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if module == prefix or module.startswith(prefix + "."):
                # the longest matching prefix decides ("superres" matches everything)
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    if best is None:
        raise AssertionError(f"{module} is in no layer")
    return best[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_module_sits_in_a_layer() -> None:
    unplaced = [m for m in import_graph() if m != "superres" and layer_of(m) == len(LAYERS) - 1
                and not any(m == p for p in LAYERS[-1])]
    assert not unplaced, f"modules that only the catch-all 'superres' covers; place them in LAYERS: {unplaced}"


def test_no_upward_import() -> None:
    upward = [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, deps in sorted(import_graph().items())
        for b in sorted(deps)
        if layer_of(b) > layer_of(a)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The graph, layer and cycle logic on a package made here: an upward import and a cycle found."""
    pkg = tmp_path / "superres"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("from .edsr import EDSR\n")
    (pkg / "models" / "edsr.py").write_text("def f():\n    from superres.inference import upscale\n")
    (pkg / "inference.py").write_text("from superres.models import edsr\n")
    graph = import_graph(pkg)
    assert graph["superres.models"] == {"superres.models.edsr"}
    assert graph["superres.models.edsr"] == {"superres.inference"}  # a function-level import counts
    assert graph["superres.inference"] == {"superres.models.edsr"}
    assert layer_of("superres.models.edsr") < layer_of("superres.inference")
    assert find_cycle(graph) in (
        ["superres.inference", "superres.models.edsr", "superres.inference"],
        ["superres.models.edsr", "superres.inference", "superres.models.edsr"],
    )
    assert find_cycle({"a": {"b"}, "b": set()}) is None
