"""Execute notebooks in place to refresh their outputs, skipping cells flagged `#| slow` (or other flags).

Usage: python tools/execute_nbs.py nbs/06b_train.ipynb [...] [--skip slow notest] [--timeout 900]
Then run `nbdev_clean --fname <notebook>` before committing.
"""
import argparse, re
from pathlib import Path
import nbformat
from nbclient import NotebookClient

def execute(path:Path, skip=('slow',), timeout:int=900):
    nb = nbformat.read(path, as_version=4)
    saved = {}
    for i, c in enumerate(nb.cells):
        flags = [l.strip() for l in c.source.splitlines()]
        noeval = any(re.match(r'#\|\s*eval:\s*false\s*$', l) for l in flags)      # cells the docs never run either
        if c.cell_type == 'code' and (noeval or any(re.match(rf'#\|\s*{f}\s*$', l) for l in flags for f in skip)):
            saved[i] = c.source; c.source = 'pass  # skipped by tools/execute_nbs.py'
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    for i, src in saved.items(): nb.cells[i].source = src; nb.cells[i].outputs = []; nb.cells[i].execution_count = None
    nb.metadata.pop('widgets', None)   # live widget state: the site shows each widget's HTML view instead
    nbformat.write(nb, path)
    print(f'{path}: executed, {len(saved)} flagged cell(s) skipped')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('notebooks', nargs='+'); p.add_argument('--skip', nargs='*', default=['slow']); p.add_argument('--timeout', type=int, default=900)
    a = p.parse_args()
    for f in a.notebooks: execute(Path(f), a.skip, a.timeout)
