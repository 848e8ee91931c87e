"""The built documentation site in a real browser: every page of `_docs/`, served on 127.0.0.1, in headless chromium.

Builds the site once per session with `python tools/build_docs.py` unless `_docs/` is newer than every notebook.
Fails (never skips) when chromium is missing: install it with `apt-get install -y chromium`.
"""
import functools, http.server, re, subprocess, sys, threading
from pathlib import Path
from urllib.parse import urljoin, urlparse, unquote
import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT/'_docs'
SHOTS = ROOT/'_screenshots'
CHROMIUM = Path('/usr/bin/chromium')
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
        '--disable-sync', '--no-first-run']
SECTIONS = ['Tutorials', "The study's figures", 'How-to guides', 'Explanation', 'Reference']
SCREENSHOT_PAGES = ['index.html', '09_widgets.html', '07d_compare.html', '03b_padding.html', '03d_packing.html']

def site_is_fresh() -> bool:
    "`_docs/` exists and is newer than every notebook and the site configuration."
    stamp = SITE/'index.html'
    if not stamp.exists(): return False
    srcs = list((ROOT/'nbs').rglob('*.ipynb')) + [ROOT/'_quarto.yml', ROOT/'nbs'/'sidebar.yml']
    srcs.append(ROOT/'tools'/'build_docs.py')
    return all(p.stat().st_mtime < stamp.stat().st_mtime for p in srcs)

@pytest.fixture(scope='session')
def site() -> Path:
    if not site_is_fresh():
        r = subprocess.run([sys.executable, 'tools/build_docs.py'], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, f'site build failed: {r.stderr.strip().splitlines()[-1:]}'
    return SITE

@pytest.fixture(scope='session')
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown()

@pytest.fixture(scope='module')    # one Playwright per module: a second `sync_playwright` may not run inside a live one
def browser():
    assert CHROMIUM.exists(), f'{CHROMIUM} is missing: install Debian chromium with `apt-get install -y chromium`'
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()

def pages(site: Path) -> list[str]:
    return sorted(str(p.relative_to(site)) for p in site.rglob('*.html') if 'site_libs' not in p.parts)

def visit(browser, url: str, shot: Path | None = None) -> dict:
    "Load `url`; return its problems (console errors, page errors, failed and external requests) and its links."
    ctx = browser.new_context(viewport={'width': 1280, 'height': 1000})
    page, found = ctx.new_page(), dict(console=[], errors=[], failed=[], external=[])
    def route(r):
        if urlparse(r.request.url).hostname in ('127.0.0.1', None) or r.request.url.startswith('data:'): r.continue_()
        else: found['external'].append(r.request.url); r.abort()
    page.route('**/*', route)
    page.on('console', lambda m: m.type == 'error' and found['console'].append(m.text))
    page.on('pageerror', lambda e: found['errors'].append(str(e)))
    page.on('requestfailed', lambda r: r.url not in found['external'] and found['failed'].append(r.url))
    page.on('response', lambda r: r.status >= 400 and found['failed'].append(f'{r.url} (HTTP {r.status})'))
    page.goto(url, wait_until='networkidle')
    found['sidebar'] = page.locator('#quarto-sidebar, nav.sidebar, .sidebar').first.inner_text() if page.locator(
        '#quarto-sidebar, nav.sidebar, .sidebar').count() else ''
    found['links'] = page.eval_on_selector_all('a[href]', 'els => els.map(e => e.getAttribute("href"))')
    if shot: shot.parent.mkdir(exist_ok=True); page.screenshot(path=str(shot), full_page=True)
    ctx.close()
    return found

def broken_links(site: Path, page: str, links: list[str]) -> list[str]:
    "Relative links of `page` whose target file is not in the site."
    bad = []
    for href in links:
        u = urlparse(href)
        if u.scheme or u.netloc or href.startswith(('#', 'mailto:', 'javascript:')) or not u.path: continue
        target = urlparse(urljoin('http://x/' + page, href)).path.lstrip('/')
        p = site/unquote(target)
        if not (p.is_file() or (p/'index.html').is_file()): bad.append(href)
    return bad

def test_every_page_offline_and_clean(site, server, browser):
    problems = []
    for name in pages(site):
        f = visit(browser, server + name)
        for kind in ['console', 'errors', 'failed', 'external']:
            problems += [f'{name}: {kind}: {x[:160]}' for x in f[kind]]
        problems += [f'{name}: sidebar lacks section {s!r}' for s in SECTIONS if s not in f['sidebar']]
        problems += [f'{name}: broken link {h}' for h in broken_links(site, name, f['links'])]
    assert not problems, f'{len(problems)} problem(s):\n' + '\n'.join(problems[:40])

def test_screenshots_saved(site, server, browser):
    for name in SCREENSHOT_PAGES:
        assert (site/name).exists(), f'{name} is not in the site'
        visit(browser, server + name, SHOTS/name.replace('.html', '.png'))   # the whole page, widgets included
        assert (SHOTS/name.replace('.html', '.png')).stat().st_size > 10_000

def test_site_has_every_notebook(site):
    nbs = ROOT/'nbs'
    want = {str(p.relative_to(nbs).with_suffix('.html')) for p in nbs.rglob('*.ipynb')
            if '.ipynb_checkpoints' not in p.parts}
    assert want <= set(pages(site)), f'notebooks without a page: {sorted(want - set(pages(site)))}'

def test_broken_links_detected(tmp_path):
    (tmp_path/'a.html').write_text('x'); (tmp_path/'sub').mkdir(); (tmp_path/'sub'/'b.html').write_text('x')
    test = broken_links(tmp_path, 'sub/b.html', ['../a.html', 'b.html#x', 'c.html', 'https://e.org/', '#top'])
    assert test == ['c.html']

def test_docs_sources_in_sync():
    r = subprocess.run([sys.executable, 'tools/build_docs.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

# ---------------------------------------------------------------- the build script's checks, on tiny inputs
sys.path.insert(0, str(ROOT/'tools'))
import build_docs

def _nb(path: Path, *sources: str) -> Path:
    cells = [dict(cell_type='code', id=f'{i:08x}', metadata={}, outputs=[], execution_count=None, source=s)
             for i, s in enumerate(sources)]
    path.write_text(build_docs.json.dumps(dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)))
    return path

def test_mixed_import_cells_named_and_split(tmp_path, monkeypatch):
    monkeypatch.setattr(build_docs, 'ROOT', tmp_path)
    nb = _nb(tmp_path/'a.ipynb', '#| export\nimport os\nx = 1', 'import json\ny = json.dumps(1)', 'import math',
             '#| eval: false\nimport re\nre.I')
    test = build_docs.mixed_import_cells(nb)
    assert test == ['a.ipynb: cell 1 (`import json`) mixes imports and code'], test
    assert build_docs.split_imports(nb) == 1
    cells = build_docs.json.loads(nb.read_text())['cells']
    assert [c['source'] for c in cells[1:3]] == ['import json', 'y = json.dumps(1)']
    assert build_docs.mixed_import_cells(nb) == []
    with pytest.raises(build_docs.BuildError, match=r'b.ipynb: cell 0 \(`import os`\)'):
        build_docs.check_imports([_nb(tmp_path/'b.ipynb', 'import os\nos.sep')])

def test_cell_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(build_docs, 'ROOT', tmp_path)
    try: raise Exception('Error in notebook: T in cell 7 :\nprint(x)\nmore') from NameError("name 'x' is not defined")
    except Exception as e: test = build_docs.cell_failure(tmp_path/'nbs'/'z.ipynb', e)
    assert test == "nbs/z.ipynb: cell 7 (`print(x)`) failed: NameError: name 'x' is not defined"

def test_check_offline_catches_cdn(tmp_path):
    (tmp_path/'a.html').write_text('<a href="https://example.org/">fine, a link</a><img src="data:image/png;base64,x">')
    build_docs.check_offline(tmp_path)
    (tmp_path/'b.html').write_text('<script defer src="https://cdn.example.org/x.js"></script>')
    with pytest.raises(build_docs.BuildError, match='cdn.example.org'): build_docs.check_offline(tmp_path)
    (tmp_path/'b.html').unlink(); (tmp_path/'c.css').write_text("@import url('https://fonts.example.org/css');")
    with pytest.raises(build_docs.BuildError, match='fonts.example.org'): build_docs.check_offline(tmp_path)

def test_reference_has_every_public_name_once():
    import importlib
    shown = re.findall(r'show_doc\(([\w.]+)\)|\("(\w+)", ([\w.]+)\.\w+\)',
                       '\n'.join(''.join(c['source']) for p in sorted((ROOT/'nbs'/'reference').glob('*.ipynb'))
                                 for c in build_docs.json.loads(p.read_text())['cells']))
    names = [a or f'{mod}.{n}' for a, n, mod in shown]
    want = [f'{m}.{n}' for mods in build_docs.public_modules().values() for m in mods
            for n in importlib.import_module(m).__all__]
    assert sorted(names) == sorted(want), set(names) ^ set(want)
