"""Build the documentation site offline into `_docs/`, without Quarto.

Usage:
  python tools/build_docs.py               build the site (nbdev processing of nbs/, then smalldocs)
  python tools/build_docs.py --reference   regenerate the API reference notebooks nbs/reference/*.ipynb
  python tools/build_docs.py --check       only check that the reference, the sidebar and the two _quarto.yml agree

Steps of a build: nbdev's `refresh_quarto_yml` and module index, `proc_nbs` one notebook at a time into `_proc/`
(a notebook that fails names itself, the cell's index and its first line, and the build exits 1), the top-level
`_quarto.yml` copied over `_proc/_quarto.yml`, `smalldocs render _proc`, then KaTeX (the only asset a page would
load from a CDN) vendored from the npm registry into `_docs/site_libs/katex/` and the pages pointed at it.
On a machine with Quarto, `nbdev_docs` builds the same site from the same `nbs/_quarto.yml` and `nbs/sidebar.yml`.
"""
from __future__ import annotations
import ast, base64, hashlib, importlib, io, json, re, shutil, subprocess, sys, tarfile, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KATEX_VERSION = '0.16.11'              # the version smalldocs 0.5.4 links (smalldocs/layout.py, `KATEX`)
KATEX_CDN = f'https://cdn.jsdelivr.net/npm/katex@{KATEX_VERSION}/dist'
KATEX_INTEGRITY = 'sha512-RQrI8rlHY92OLf3rho/Ts8i/XvjgguEjOkO1BEXcU3N8BqPpSzBNwV/G0Ukr+P/l3ivvJUE/Fa/CwbS6HesGNQ=='
NPM_CACHE = ROOT/'.cache'/'npm'
ASSET_RE = re.compile(r'''<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*?\b(?:src|href)=["']?'''
                      r'''(?:https?:)?//[^"'\s>]+''', re.I)      # a tag that loads a file from another host
CSS_URL_RE = re.compile(r'''(?:url\(|@import\s+)["']?(?:https?:)?//[^"')\s]+''', re.I)

T0 = time.time()

class BuildError(Exception): "A problem with the sources, reported in one line."

# ---------------------------------------------------------------- API reference: one notebook per subpackage
TOP_LEVEL_PAGES = {'sizes': 'core', 'graphs': 'core', 'loading': 'core', 'widgets': 'interfaces', 'cli': 'interfaces'}
PAGE_TITLES = {'core': 'Sizes, graphs and loading', 'data': 'Datasets', 'batching': 'Batching algorithms',
               'models': 'Models', 'training': 'Training', 'measure': 'Measuring and the cost model',
               'experiments': 'Experiments', 'interfaces': 'Widgets and the command line'}

def public_modules() -> dict[str, list[str]]:
    "Reference page -> module names, from the package index `gnnbatch_nb/_modidx.py` (the modules nbdev exports)."
    from gnnbatch_nb._modidx import d
    pages = {}
    for mod in sorted(d['syms']):
        parts = mod.split('.')[1:]
        page = parts[0] if len(parts) > 1 else TOP_LEVEL_PAGES.get(parts[0])
        if page is None:
            raise BuildError(f'module {mod} has no reference page: add it to TOP_LEVEL_PAGES in tools/build_docs.py')
        pages.setdefault(page, []).append(mod)
    return pages

def _cell(kind: str, src: str, i: int) -> dict:
    cid = hashlib.md5(f'{i}{src}'.encode()).hexdigest()[:8]
    if kind == 'markdown': return dict(cell_type='markdown', id=cid, metadata={}, source=src)
    return dict(cell_type='code', execution_count=None, id=cid, metadata={}, outputs=[], source=src)

CONSTANTS_CELL = """#| exec_doc
#| echo: false
rows = [{rows}]
Markdown("| constant | type | value |\\n|---|---|---|\\n" + "\\n".join(
    "| `%s` | `%s` | `%s` |" % (n, type(v).__name__, repr(v)[:80].replace("|", "\\\\|")) for n, v in rows))"""

def _constants_cell(mod: str, names: list[str]) -> str:
    "A cell, run while building the docs, that shows a table of the module's constants (type, start of the value)."
    return CONSTANTS_CELL.format(rows=', '.join(f'("{n}", {mod}.{n})' for n in names))

def reference_notebook(page: str, mods: list[str]) -> dict:
    "A notebook with one `show_doc` per callable in each module's `__all__` and a table of its constants."
    subpackage = f'gnnbatch_nb.{page}' if all(m.startswith(f'gnnbatch_nb.{page}.') for m in mods) else None
    where = f'`{subpackage}`' if subpackage else ', '.join(f'`{m}`' for m in mods)
    cells = [('markdown', f'# Reference: {PAGE_TITLES[page].lower()}\n> Every public name of {where}, '
              'one entry per name in `__all__`.'),
             ('code', '#| hide\nfrom nbdev.showdoc import show_doc\nfrom IPython.display import Markdown')]
    for mod in mods:
        m = importlib.import_module(mod)
        funcs = [n for n in m.__all__ if callable(getattr(m, n))]
        consts = [n for n in m.__all__ if n not in funcs]
        cells += [('markdown', f'## `{mod}`'), ('code', f'#| hide\nimport {mod}')]
        if consts: cells.append(('code', _constants_cell(mod, consts)))
        cells += [('code', f'show_doc({mod}.{n})') for n in funcs]
    return dict(cells=[_cell(k, s, i) for i, (k, s) in enumerate(cells)], nbformat=4, nbformat_minor=5,
                metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')))

def reference_texts() -> dict[Path, str]:
    "Path -> the text each reference notebook should have."
    return {ROOT/'nbs'/'reference'/f'{page}.ipynb': json.dumps(reference_notebook(page, mods), indent=1,
                                                              ensure_ascii=False) + '\n'
            for page, mods in public_modules().items()}

def write_reference():
    want = reference_texts()
    for old in (ROOT/'nbs'/'reference').glob('*.ipynb'):
        if old not in want: old.unlink()
    for p, text in want.items(): p.parent.mkdir(exist_ok=True); p.write_text(text)
    print(f'wrote {len(want)} reference notebooks under nbs/reference/')

def _cell_sources(text: str) -> list:
    return [(c['cell_type'], ''.join(c['source'])) for c in json.loads(text)['cells']]

def check_reference():
    "The committed reference notebooks have the cells `--reference` would write (nbdev_clean may reformat them)."
    want = {p: _cell_sources(t) for p, t in reference_texts().items()}
    have = {p: _cell_sources(p.read_text()) for p in (ROOT/'nbs'/'reference').glob('*.ipynb')}
    stale = sorted(str(p.relative_to(ROOT)) for p in set(want) | set(have) if want.get(p) != have.get(p))
    if stale: raise BuildError(f'API reference out of date with __all__ ({", ".join(stale)}): '
                               'run `python tools/build_docs.py --reference`')

# ---------------------------------------------------------------- configuration checks
def sidebar_entries() -> list[str]:
    "Every page the committed sidebar `nbs/sidebar.yml` lists, in order."
    import yaml
    def walk(items):
        for it in items:
            if isinstance(it, str): yield it
            elif 'href' in it: yield it['href']
            else: yield from walk(it.get('contents', []))
    return list(walk(yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents']))

def check_sidebar():
    from nbdev.doclinks import nbglob
    nbs = ROOT/'nbs'
    pages = sorted(str(Path(p).relative_to(nbs)) for p in nbglob(nbs, skip_folder_re=r'^[_.]'))
    listed = sidebar_entries()
    twice = sorted({p for p in listed if listed.count(p) > 1})
    missing, unknown = [p for p in pages if p not in listed], [p for p in listed if p not in pages]
    for what, names in [('listed twice', twice), ('missing from it', missing), ('listed but not found', unknown)]:
        if names: raise BuildError(f'nbs/sidebar.yml: notebooks {what}: {", ".join(names)}')

def check_quarto_yml():
    if (ROOT/'_quarto.yml').read_text() != (ROOT/'nbs'/'_quarto.yml').read_text():
        raise BuildError('_quarto.yml and nbs/_quarto.yml differ: edit _quarto.yml and copy it to nbs/_quarto.yml '
                         '(nbdev_docs reads nbs/_quarto.yml)')

# ---------------------------------------------------------------- cells nbdev would run while building the docs
def _runs_in_docs(src: str) -> tuple[bool, bool]:
    "(nbdev's docs processing runs this cell only for its imports, the cell has more than imports)."
    if re.search(r'^#\|\s*(export|exports|exporti|exec_doc)\b|^#\|\s*eval:\s*false', src, re.M): return False, False
    try: tree = ast.parse(src)
    except SyntaxError: return False, False
    has_import = any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))
    return has_import, any(not isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body)

def mixed_import_cells(nb_path: Path) -> list[str]:
    "Cells nbdev's `exec_show_docs` would execute in full because they import (nbdev FAQ: imports in their own cell)."
    cells = json.loads(nb_path.read_text())['cells']
    return [f'{nb_path.relative_to(ROOT)}: cell {i} (`{"".join(c["source"]).splitlines()[0]}`) mixes imports and code'
            for i, c in enumerate(cells) if c['cell_type'] == 'code' and all(_runs_in_docs(''.join(c['source'])))]

def check_imports(nbs: list[Path]):
    "Fail with one line per cell that nbdev would run in full while building the docs."
    bad = [line for nb in nbs if '.ipynb_checkpoints' not in nb.parts for line in mixed_import_cells(nb)]
    if bad: raise BuildError('\n'.join(bad) + f'\n{len(bad)} cell(s) would run while building the docs (nbdev '
                             'runs every cell that imports); move the imports to a cell of their own, e.g. with '
                             '`python tools/build_docs.py --split-imports NB.ipynb ...`')

def split_imports(nb_path: Path) -> int:
    "Move each mixed cell's top-level imports into a new cell just before it (with the same directives)."
    nb, n = json.loads(nb_path.read_text()), 0
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'code' and all(_runs_in_docs(src)):
            lines, tree = src.splitlines(), ast.parse(src)
            imp = {i for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                   for i in range(node.lineno - 1, node.end_lineno)}
            dirs = [l for l in lines if l.startswith('#|')]
            out.append(dict(c, id=hashlib.md5((c['id'] + 'imports').encode()).hexdigest()[:8], outputs=[],
                            execution_count=None, source='\n'.join(dirs + [lines[i] for i in sorted(imp)])))
            c = dict(c, source='\n'.join(l for i, l in enumerate(lines) if i not in imp)); n += 1
        out.append(c)
    nb['cells'] = out
    nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return n

# ---------------------------------------------------------------- nbdev processing
def process_notebooks() -> Path:
    "nbdev's `proc_nbs`, one file at a time, so that a failing notebook is named with its cell."
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml
    from nbdev.doclinks import _build_modidx, nbglob
    from nbdev.serve import _proc_file
    import nbdev.serve_drv
    cfg = get_config()
    refresh_quarto_yml(); _build_modidx()
    cache = cfg.config_path/'_proc'
    shutil.rmtree(cache, ignore_errors=True); cache.mkdir()
    nbs = cfg.nbs_path
    files = nbglob(nbs, func=Path, file_glob='', file_re='') + [nbs/'_quarto.yml']
    for job in filter(None, (_proc_file(f, cache=cache, path=nbs) for f in files)):
        try: nbdev.serve_drv.main(job)
        except Exception as e: raise BuildError(cell_failure(job[0], e)) from e
    shutil.copy2(ROOT/'_quarto.yml', cache/'_quarto.yml')
    return cache

def _code(src: str) -> str: return '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()

def cell_failure(nb: Path, e: Exception) -> str:
    "One line: the notebook, the failing cell's index and first line in the source notebook, and the error."
    m = re.search(r'in cell (\d+) :\n(.*)', str(e), re.S)
    where = 'processing'
    if m:
        code = _code(m.group(2))
        cells = [_code(''.join(c['source'])) for c in json.loads(nb.read_text())['cells']] if nb.exists() else []
        idx = cells.index(code) if code in cells else int(m.group(1))   # nbdev counts the cells it inserted
        where = f'cell {idx} (`{code.splitlines()[0] if code else ""}`)'
    cause = e.__cause__ or e
    first = str(cause).splitlines()[0] if str(cause) else ''
    return f'{nb.relative_to(ROOT)}: {where} failed: {type(cause).__name__}: {first}'

# ---------------------------------------------------------------- rendering and offline assets
def render(cache: Path) -> Path:
    smalldocs = Path(sys.executable).parent/'smalldocs'
    r = subprocess.run([str(smalldocs if smalldocs.exists() else 'smalldocs'), 'render', '--quiet', str(cache)],
                       capture_output=True, text=True)
    if r.returncode: raise BuildError(f'smalldocs render failed: {(r.stderr or r.stdout).strip().splitlines()[-1]}')
    out = ROOT/'_docs'
    shutil.rmtree(out, ignore_errors=True); shutil.move(str(cache/'_docs'), str(out))
    return out

def npm_tarball(name: str, version: str, integrity: str) -> bytes:
    "The package's tarball from the npm registry (`npm pack`, or its registry URL without npm), cached, hash-checked."
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    tgz = NPM_CACHE/f'{name}-{version}.tgz'
    if not tgz.exists():
        if shutil.which('npm'): subprocess.run(['npm', 'pack', '--silent', f'{name}@{version}'], cwd=NPM_CACHE,
                                               check=True, capture_output=True)
        else:                                                          # CI has Python and git only
            tgz.write_bytes(urllib.request.urlopen(f'https://registry.npmjs.org/{name}/-/{name}-{version}.tgz').read())
    data = tgz.read_bytes()
    if 'sha512-' + base64.b64encode(hashlib.sha512(data).digest()).decode() != integrity:
        tgz.unlink()
        raise BuildError(f'{tgz.name}: sha512 does not match the npm registry integrity; rerun to fetch it again')
    return data

def vendor_katex(site: Path) -> int:
    "Unpack KaTeX's `dist/` into site_libs/katex and point every page at it; return the pages changed."
    dest = site/'site_libs'/'katex'
    with tarfile.open(fileobj=io.BytesIO(npm_tarball('katex', KATEX_VERSION, KATEX_INTEGRITY))) as tf:
        for m in tf.getmembers():
            if m.isfile() and m.name.startswith('package/dist/'):
                p = dest/m.name[len('package/dist/'):]
                p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(tf.extractfile(m).read())
    changed = 0
    for page in site.rglob('*.html'):
        text = page.read_text()
        if KATEX_CDN in text:
            rel = '../' * (len(page.relative_to(site).parts) - 1)
            page.write_text(text.replace(KATEX_CDN, f'{rel}site_libs/katex')); changed += 1
    return changed

def page_names(cache: Path) -> dict[str, str]:
    "Quarto's page name (nbdev's `output-file`, e.g. `plan.html`) -> the page smalldocs writes (`03a_plan.html`)."
    import yaml
    names = {}
    for nb in cache.rglob('*.ipynb'):
        src = ''.join(json.loads(nb.read_text())['cells'][0]['source'])
        m = re.match(r'---\n(.*?)\n---', src, re.S)
        out = (yaml.safe_load(m.group(1)) or {}).get('output-file') if m else None
        rel = nb.relative_to(cache).with_suffix('.html')
        if out: names[str(rel.with_name(out))] = str(rel)
    return names

def localise_doc_links(site: Path, cache: Path) -> int:
    "Point nbdev's links to the published site (`doc_host`/`doc_baseurl`) at the pages of this build; return the count."
    from nbdev.config import get_config
    cfg = get_config()
    host = f"{cfg.doc_host.rstrip('/')}/{cfg.doc_baseurl.strip('/')}/".replace('//', '/').replace(':/', '://')
    names, n = page_names(cache), 0
    pat = re.compile(r'href="' + re.escape(host) + r'([^"#]*)(#[^"]*)?"')
    for page in site.rglob('*.html'):
        rel = '../' * (len(page.relative_to(site).parts) - 1)
        def local(m):
            target = names.get(m.group(1), m.group(1))
            return f'href="{rel}{target}{m.group(2) or ""}"' if (site/target).is_file() else m.group(0)
        text = page.read_text()
        new, k = pat.subn(local, text)
        if k: page.write_text(new); n += k
    return n

def check_offline(site: Path):
    "No page or stylesheet may load anything from another host (links a reader clicks are fine)."
    bad = []
    for f in sorted(site.rglob('*.html')) + sorted(site.rglob('*.css')):
        pat = ASSET_RE if f.suffix == '.html' else CSS_URL_RE
        bad += [f'{f.relative_to(site)}: {m.group(0)[:100]}' for m in pat.finditer(f.read_text(errors='replace'))]
    if bad: raise BuildError(f'{len(bad)} external asset(s) would be loaded, first: {bad[0]}')

def build(t0: float):
    check_quarto_yml(); check_sidebar(); check_reference()
    check_imports(sorted((ROOT/'nbs').rglob('*.ipynb')))
    site = render(process_notebooks())
    vendor_katex(site); localise_doc_links(site, ROOT/'_proc'); check_offline(site)
    pages = sorted(site.rglob('*.html'), key=lambda p: p.stat().st_size)
    print(f'built {len(pages)} pages into {site.relative_to(ROOT)}/ in {time.time() - t0:.1f} s; '
          f'largest {pages[-1].relative_to(site)} ({pages[-1].stat().st_size / 1e6:.1f} MB)')

if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    try:
        if '--reference' in sys.argv: write_reference()
        elif '--split-imports' in sys.argv:
            for f in sys.argv[sys.argv.index('--split-imports') + 1:]:
                print(f'{f}: split {split_imports(Path(f).resolve())} cell(s)')
        elif '--check' in sys.argv:
            check_quarto_yml(); check_sidebar(); check_reference(); print('docs sources in sync')
        else: build(T0)
    except BuildError as e: sys.exit(f'build_docs: {e}')
