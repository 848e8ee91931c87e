"Exported code reads in one screen: function bodies of at most `MAX_BODY` lines and lines of at most `MAX_LINE` characters."
import ast
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parent.parent/'gnnbatch_nb'
MAX_BODY, MAX_LINE = 30, 120
# Functions allowed to be longer, each with the reason (keep this short; it is reported by the closing note).
LONGER = {}

def sources():
    return [p for p in sorted(PKG.rglob('*.py')) if p.name != '_modidx.py']

def body_lines(fn:ast.AST) -> int:
    "Lines from the first statement of `fn`'s body (its docstring) to its end; the signature is not counted."
    return fn.end_lineno - fn.body[0].lineno + 1

def long_functions(path:Path) -> list:
    tree = ast.parse(path.read_text())
    return [(f'{path.name}:{n.lineno} {n.name}', body_lines(n)) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(n) > MAX_BODY]

def long_lines(path:Path) -> list:
    lines = path.read_text().splitlines()
    in_all = False
    out = []
    for i, l in enumerate(lines, 1):
        in_all = l.startswith('__all__') or (in_all and l.startswith(' '))   # nbdev writes __all__ itself
        if len(l) > MAX_LINE and not in_all: out.append(f'{path.name}:{i} ({len(l)} chars)')
    return out

def test_functions_are_short():
    too_long = [(k, n) for p in sources() for k, n in long_functions(p) if k.split(' ')[1] not in LONGER]
    assert not too_long, f"functions over {MAX_BODY} body lines (split them along their steps): {too_long}"

def test_lines_are_short():
    bad = [x for p in sources() for x in long_lines(p)]
    assert not bad, f"{len(bad)} lines over {MAX_LINE} characters, e.g. {bad[:10]}"

def test_the_checks_see_long_code(tmp_path):
    p = tmp_path/'m.py'
    p.write_text('def f():\n    "doc"\n' + '    x = 1\n' * MAX_BODY + f"y = '{'a' * MAX_LINE}'\n")
    assert [n for _, n in long_functions(p)] == [MAX_BODY + 1]
    assert len(long_lines(p)) == 1

# One training step: forward, loss, backward and optimiser step are written once, in `training.timers.train_step`;
# every trainer, timer and benchmark calls it (a gradient alone, e.g. for a padding check, is not a training step).
ONE_STEP = ('timers.py', 'train_step')

def own_training_steps(path:Path) -> list:
    "Functions of `path` that call both `.backward()` and `.step()`: a training step of their own."
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)): continue
        calls = {n.func.attr for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        name = getattr(fn, 'name', '<lambda>')
        if {'backward', 'step'} <= calls and (path.name, name) != ONE_STEP: out.append(f'{path.name}:{fn.lineno} {name}')
    return out

def test_one_training_step():
    found = [x for p in sources() for x in own_training_steps(p)]
    assert not found, f"these write their own backward and optimiser step; call training.timers.train_step: {found}"
    assert any(p.name == ONE_STEP[0] and 'def train_step(' in p.read_text() for p in sources())

def test_the_one_step_check_sees_another_step(tmp_path):
    p = tmp_path/'trainer.py'
    p.write_text("def fit(model, opt, b):\n    loss = model(b).sum()\n    opt.zero_grad(); loss.backward(); opt.step()\n"
                 "def grads(model, b):\n    model(b).sum().backward()\n")
    assert own_training_steps(p) == ['trainer.py:1 fit']
