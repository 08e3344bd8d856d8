"""The package's layers, and the one direction imports may take between them.

``LAYERS`` is the single list of the layers (docs/ARCHITECTURE.md draws it): a module may
import from its own package, from lower layers, and from nothing above. Packages that share
a layer (``data`` and ``models``) do not import each other. Function-level (lazy) imports
count: a lazy import of a higher layer is still a circle waiting to happen.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "softloss_cli"

#: top to bottom; each entry: the layer's name and the top-level names (packages or modules)
#: of ``softloss_cli`` that belong to it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry point", ("__main__",)),
    ("dispatch", ("cli",)),
    ("commands", ("commands",)),
    ("runs", ("runs",)),
    ("train", ("train",)),
    ("plots", ("plots",)),
    ("config", ("config",)),
    ("data and models", ("data", "models")),
    ("losses", ("losses",)),
    ("metrics", ("metrics",)),
    ("core", ("tasks", "registry", "errors", "progress", "__init__")),
]


def _unit(module: str) -> str:
    """``softloss_cli.train.loop`` -> ``train``; ``softloss_cli`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer_index() -> dict[str, int]:
    return {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """Every ``softloss_cli...`` module a file imports, at any depth of the file."""
    module = _module_name(path, package)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "softloss_cli")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "softloss_cli":
                continue
            found.add(target)
            # ``from softloss_cli.x import y``: y may be a submodule
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (package.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                        package.parent / candidate.replace(".", "/") / "__init__.py").exists():
                    found.add(candidate)
    return found


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    return {_module_name(p, package): _imports(p, package) for p in package.rglob("*.py")}


def test_every_top_level_name_of_the_package_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - set(_layer_index()) == set(), "add the new module or package to LAYERS"


def test_imports_only_flow_downward():
    layer = _layer_index()
    upward = []
    for module, targets in _graph().items():
        src = _unit(module)
        for target in targets:
            dst = _unit(target)
            if dst == src:
                continue
            if layer[dst] <= layer[src]:
                upward.append(f"{module} -> {target} ({LAYERS[layer[src]][0]} -> {LAYERS[layer[dst]][0]})")
    assert upward == [], "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_no_import_circles_between_modules():
    graph = _graph()
    modules = set(graph)

    def resolve(target: str) -> str | None:
        # a name imported from a package's __init__ resolves to that package
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m} for m, ts in graph.items()}
    # Package __init__ files that re-export their own submodules are not circles of behaviour.
    for m in edges:
        edges[m] = {t for t in edges[m] if not (t.startswith(m + ".") or m.startswith(t + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "import circles:\n" + "\n".join(cycles)


def test_no_private_name_is_imported_from_another_module():
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("softloss_cli"):
                private += [f"{_module_name(path)}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule is not vacuous: a lazy import of a command from the losses is caught."""
    fake = tmp_path / "softloss_cli"
    (fake / "losses").mkdir(parents=True)
    (fake / "commands").mkdir()
    for init in (fake / "__init__.py", fake / "losses" / "__init__.py", fake / "commands" / "__init__.py"):
        init.write_text("")
    (fake / "commands" / "report.py").write_text("")
    (fake / "losses" / "bad.py").write_text("def f():\n    from softloss_cli.commands.report import main\n")
    graph = _graph(fake)
    assert "softloss_cli.commands.report" in graph["softloss_cli.losses.bad"]
    layer = _layer_index()
    assert layer[_unit("softloss_cli.commands.report")] < layer[_unit("softloss_cli.losses.bad")]
