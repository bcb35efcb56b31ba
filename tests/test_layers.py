"""The house's layers (docs/architecture.md): no import from a higher layer, no import cycle.

Every ``import`` / ``from ... import`` of every module counts, also the ones inside functions
(a lazy import is still a dependency)."""

import ast
from pathlib import Path

import w2sclip

SRC = Path(w2sclip.__file__).parent
LAYERS = [  # (module prefix, layer); the longest matching prefix wins
    ("w2sclip.fileio", 0), ("w2sclip.versions", 0),
    ("w2sclip.data", 1), ("w2sclip.models", 1),
    ("w2sclip.features", 2), ("w2sclip.methods", 2), ("w2sclip.losses", 2), ("w2sclip.eval", 2),
    ("w2sclip.config", 3),
    ("w2sclip.run", 4),
    ("w2sclip.sweep", 5), ("w2sclip.selection", 5),
    ("w2sclip.report", 6), ("w2sclip.plots", 6), ("w2sclip.export", 6),
    ("w2sclip.demo", 7),
    ("w2sclip.cli", 8),
]


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(mod: str) -> int | None:
    best = max((p for p, _ in LAYERS if mod == p or mod.startswith(p + ".")), key=len, default=None)
    return dict(LAYERS)[best] if best else None


def _imports(path: Path, mod: str) -> set[str]:
    out = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("w2sclip")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            if base.startswith("w2sclip"):
                # "from w2sclip.x import y" depends on w2sclip.x.y when that is a module, else on w2sclip.x
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.add(sub if (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                            or (SRC.parent / sub.replace(".", "/") / "__init__.py").exists() else base)
    return out - {mod}


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p, _module(p)) for p in SRC.rglob("*.py")}


def test_every_module_has_a_layer():
    missing = sorted(m for m in _graph() if m != "w2sclip" and _layer(m) is None)
    assert not missing, f"modules without a layer in tests/test_layers.py: {missing}"


def test_no_import_from_a_higher_layer():
    bad = [(m, d) for m, deps in _graph().items() for d in deps
           if _layer(m) is not None and _layer(d) is not None and _layer(d) > _layer(m)]
    assert not bad, f"imports from a higher layer: {bad}"


def test_data_knows_nothing_about_models():
    bad = [(m, d) for m, deps in _graph().items() if m.startswith("w2sclip.data")
           for d in deps if d.startswith("w2sclip.models") or d.startswith("w2sclip.features")]
    assert not bad, bad


def test_no_import_cycle():
    graph = _graph()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
