"Every `gnnbatch …` command the README and the notebooks' Markdown show is a command the parser accepts."
import json, re, shlex
from pathlib import Path
import pytest
from gnnbatch_nb.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r'```(?:bash|sh|shell)?\n(.*?)```', re.S)
INLINE = re.compile(r'`(gnnbatch [^`]+)`')

PLACEHOLDER = re.compile(r'\[|\.\.\.|…|<|\b[A-Z]+\b')     # `[--flag X]`, `...`, `<dir>`, `--nproc N`: a template

def _commands(text:str) -> list:
    "`gnnbatch` commands of `text`: lines of fenced blocks, inline code with flags; templates left out."
    out = [l.split('#')[0].strip() for b in FENCE.findall(text) for l in b.splitlines()
           if l.strip().startswith('gnnbatch ')]
    out += [c for c in INLINE.findall(text) if ' -' in c]            # `gnnbatch train` alone names the command
    return [c.split('&&')[0].strip() for c in out if not PLACEHOLDER.search(c)]

def shown_commands() -> list:
    "(where, command) of every command shown in the README and in the notebooks' Markdown cells."
    found = [('README.md', c) for c in _commands((ROOT/'README.md').read_text())]
    for nb in sorted((ROOT/'nbs').rglob('*.ipynb')):
        for cell in json.loads(nb.read_text())['cells']:
            if cell['cell_type'] == 'markdown':
                found += [(nb.name, c) for c in _commands(''.join(cell['source']))]
    return found

def test_commands_are_found():
    cmds = shown_commands()
    assert len(cmds) >= 10 and any('compare' in c for _, c in cmds)

@pytest.mark.parametrize('where,command', shown_commands())
def test_shown_command_parses(where, command):
    try: build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit as e:                                           # --help exits 0
        if e.code: pytest.fail(f"{where}: `{command}` is refused by the parser (exit {e.code})")

def test_the_check_sees_a_bad_command():
    cmd = _commands("```bash\ngnnbatch compare --modes eager static   # the old names\n```")[0]
    with pytest.raises(SystemExit): build_parser().parse_args(shlex.split(cmd)[1:])
