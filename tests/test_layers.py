"The package's layers: every module imports only from its own layer or the layers below it."
import ast
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parent.parent/'gnnbatch_nb'
# The one place the layer order is written: lowest first. A module's layer is its top-level name under the package.
LAYERS = [('sizes', 'graphs'), ('data',), ('batching',), ('loading',), ('models',), ('training',), ('measure',),
          ('experiments',), ('widgets',), ('cli',)]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
# Lower layers a layer still must not use: the models see only `PaddedBatch`es, never a planner.
KNOWS_NOTHING_OF = {'models': ('batching',)}

def modules():
    "Every generated module of the package, as (dotted name, path)."
    for p in sorted(PKG.rglob('*.py')):
        rel = p.relative_to(PKG).with_suffix('')
        if rel.name in ('_modidx', '__init__') and len(rel.parts) == 1: continue
        yield '.'.join(rel.parts), p

def imported(path:Path, dotted:str) -> set:
    "The package modules imported anywhere in `path` (top level or inside functions), as dotted names under the package."
    pkg = dotted.split('.')[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level: base = (pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg) + (node.module or '').split('.')
            elif (node.module or '').startswith('gnnbatch_nb'): base = node.module.split('.')[1:]
            else: continue
            out.add('.'.join(p for p in base if p))
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.', 1)[1] for a in node.names if a.name.startswith('gnnbatch_nb.')}
    return out - {''}

def layer(dotted:str) -> int:
    top = dotted.split('.')[0]
    if top not in RANK: raise KeyError(f"{dotted}: not in any layer; add {top!r} to LAYERS in {__file__}")
    return RANK[top]

@pytest.mark.parametrize('dotted,path', list(modules()), ids=lambda v: v if isinstance(v, str) else '')
def test_imports_go_down(dotted, path):
    up = sorted(m for m in imported(path, dotted) if layer(m) > layer(dotted))
    assert not up, f"{dotted} (layer {LAYERS[layer(dotted)]}) imports from higher layers: {up}"

@pytest.mark.parametrize('dotted,path', list(modules()), ids=lambda v: v if isinstance(v, str) else '')
def test_no_forbidden_lower_imports(dotted, path):
    banned = KNOWS_NOTHING_OF.get(dotted.split('.')[0], ())
    bad = sorted(m for m in imported(path, dotted) if m.split('.')[0] in banned)
    assert not bad, f"{dotted} must know nothing of {banned}, but imports {bad}"

def test_every_module_has_a_layer():
    for dotted, _ in modules(): layer(dotted)

def test_the_checker_sees_an_upward_import(tmp_path):
    p = tmp_path/'x.py'; p.write_text("def f():\n    from ..cli import main\n    from gnnbatch_nb.measure.compare import compare\n")
    got = imported(p, 'batching.x')
    assert got == {'cli', 'measure.compare'}, got
    assert all(layer(m) > layer('batching.x') for m in got)
