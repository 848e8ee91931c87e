"""The widgets on the static site: served on 127.0.0.1, driven in Chromium with Playwright, checked against Python.

Uses the built site (`_docs/09_widgets.html`, rebuilt with `tools/build_docs.py` when missing or older than the notebook);
if the site cannot be built, the notebook alone is rendered with smalldocs in a temporary folder."""
import functools, http.server, json, shutil, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path
from urllib.parse import urlparse
import numpy as np
import pytest
from gnnbatch_nb.batching.registry import make_plan
from gnnbatch_nb.measure.compare import recommend
from gnnbatch_nb.widgets import load_result_grid, grid_profiles, training_sizes

ROOT = Path(__file__).resolve().parent.parent
NB, SITE, SHOTS = ROOT/'nbs'/'09_widgets.ipynb', ROOT/'_docs', ROOT/'_screenshots'
CHROMIUM = '/usr/bin/chromium'

def site_folder(tmp: Path) -> Path:
    "A folder holding 09_widgets.html built from the current notebook."
    page = SITE/'09_widgets.html'
    if not page.exists() or page.stat().st_mtime < NB.stat().st_mtime:
        if (ROOT/'tools'/'build_docs.py').exists():
            subprocess.run([sys.executable, 'tools/build_docs.py'], cwd=ROOT, timeout=1500)
    if page.exists() and page.stat().st_mtime >= NB.stat().st_mtime: return SITE
    print('site build unavailable: rendering nbs/09_widgets.ipynb alone with smalldocs')
    shutil.copy(NB, tmp/NB.name)
    (tmp/'_quarto.yml').write_text('project:\n  type: website\n  output-dir: _site\nformat:\n  html:\n    theme: litera\n')
    subprocess.run([str(Path(sys.executable).parent/'smalldocs'), 'render', '-q', str(tmp)], check=True, timeout=300)
    html = tmp/'_site'/'09_widgets.html'   # the site build vendors KaTeX; drop the CDN tags here
    html.write_text('\n'.join(l for l in html.read_text().splitlines() if 'cdn.jsdelivr.net' not in l))
    return tmp/'_site'

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class Handler(http.server.SimpleHTTPRequestHandler):
    "Static files; 204 for the browser's own favicon probe (the page links none)."
    def log_message(self, *args): pass
    def do_GET(self):
        if self.path == '/favicon.ico': self.send_response(204); self.end_headers(); return
        super().do_GET()

@pytest.fixture(scope='module')
def served(tmp_path_factory):
    folder = site_folder(tmp_path_factory.mktemp('site'))
    handler = functools.partial(Handler, directory=str(folder))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', free_port()), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/09_widgets.html', folder
    srv.shutdown()

@pytest.fixture(scope='module')
def page(served):
    from playwright.sync_api import sync_playwright
    url, _ = served
    log = dict(errors=[], hosts=set())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'])
        pg = browser.new_page(viewport={'width': 1200, 'height': 900})
        pg.on('console', lambda m: m.type == 'error' and log['errors'].append(f"{m.text} ({m.location.get('url')})"))
        pg.on('pageerror', lambda e: log['errors'].append(str(e)))
        pg.on('requestfailed', lambda r: log['errors'].append(f'request failed: {r.url}'))
        pg.on('request', lambda r: log['hosts'].add(urlparse(r.url).hostname))
        pg.on('response', lambda r: r.status >= 400 and log['errors'].append(f'HTTP {r.status}: {r.url}'))
        pg.goto(url); pg.wait_for_selector('.gnnbatch-panel .gb-winner[data-algorithm]')
        pg.log = log
        yield pg
        browser.close()

@pytest.fixture(scope='module')
def ref():
    grid = load_result_grid(ROOT/'results')
    return grid, grid_profiles(grid)

def shown(pg) -> list:
    "(algorithm, mode, total seconds) of every row of the panel's table, in the order shown."
    return pg.eval_on_selector_all('.gnnbatch-panel .gb-table tr[data-algorithm]',
                                   'rs => rs.map(r => [r.dataset.algorithm, r.dataset.mode, Number(r.dataset.total)])')

def check_against_python(pg, ref, key, steps):
    grid, profiles = ref
    d, m, b = key
    cell = grid[key]
    algs = list(dict.fromkeys(cell['table'].algorithm))
    r = recommend(cell['model'], {a: profiles[(d, b)][a] for a in algs}, steps)
    rows = shown(pg)
    assert [(a, mo) for a, mo, _ in rows] == list(zip(r.algorithm, r['mode']))
    np.testing.assert_allclose([t for *_, t in rows], 3600 * r.total_h.to_numpy(), rtol=1e-9)
    w = pg.eval_on_selector('.gnnbatch-panel .gb-winner', 'e => [e.dataset.algorithm, e.dataset.mode, e.textContent]')
    assert (w[0], w[1]) == (r.algorithm[0], r['mode'][0])
    assert f'{int(steps):,} steps' in w[2]
    assert r.attrs['verdict'] in w[2], (r.attrs['verdict'], w[2])          # the same words as gnnbatch compare
    return r

def set_steps(pg, steps) -> float:
    "Type a step count into the panel; returns the milliseconds the page took to recompute and redraw."
    return pg.evaluate("""s => { const e = document.querySelector('.gnnbatch-panel .gb-steps'), t0 = performance.now();
        e.value = s; e.dispatchEvent(new Event('input')); return performance.now() - t0; }""", str(steps))

def test_panel_says_it_shows_saved_results(page):
    note = page.text_content('.gnnbatch-panel .gb-note')
    assert 'Saved results' in note and 'Run' in note
    assert 'results/models/schnet/compare.json' in page.text_content('.gnnbatch-panel .gb-source')

def test_panel_steps_and_batch_size(page, ref):
    SHOTS.mkdir(exist_ok=True)
    check_against_python(page, ref, ('qm9', 'schnet', 32), 100_000)
    page.locator('.gnnbatch-panel').screenshot(path=str(SHOTS/'panel_100k.png'))
    times, winners = [], set()
    for s in (100, 1_000, 2_000_000, 50_000_000):
        times.append(set_steps(page, s))
        r = check_against_python(page, ref, ('qm9', 'schnet', 32), s)
        winners.add((r.algorithm[0], r['mode'][0]))
    assert len(winners) > 1, 'the winner should move with the number of steps on this cell'
    page.locator('.gnnbatch-panel').screenshot(path=str(SHOTS/'panel_50M.png'))
    t0 = time.perf_counter()
    page.select_option('.gnnbatch-panel .gb-batch', '64')
    check_against_python(page, ref, ('qm9', 'schnet', 64), 50_000_000)
    round_trip = 1e3 * (time.perf_counter() - t0)
    times.append(set_steps(page, 20_000))
    check_against_python(page, ref, ('qm9', 'schnet', 64), 20_000)
    page.locator('.gnnbatch-panel').screenshot(path=str(SHOTS/'panel_B64.png'))
    print(f"\nstatic panel: recompute + redraw {max(times):.1f} ms at most ({np.median(times):.1f} ms median) over {len(times)} "
          f"step changes; batch-size change incl. Playwright round trip {round_trip:.0f} ms")

def test_explorer_algorithm(page):
    sizes = training_sizes(('qm9',))['qm9']
    page.locator('.gnnbatch-explorer').scroll_into_view_if_needed()
    for alg, k in (('static-2^N', 0), ('packing', 0), ('bucketing', 8)):
        t0 = time.perf_counter()
        page.select_option('.gnnbatch-explorer .gx-alg', alg)
        if k: page.select_option('.gnnbatch-explorer .gx-k', str(k))
        ms = 1e3 * (time.perf_counter() - t0)
        plan = make_plan(sizes, alg, 32, **(dict(n_buckets=k) if k else {}))
        r = plan.report()
        got = page.eval_on_selector('.gnnbatch-explorer .gx-table', 'e => [Number(e.dataset.nodeEff), Number(e.dataset.nShapes)]')
        assert got[0] == pytest.approx(r['node_eff'], rel=1e-12) and got[1] == r['n_shapes']
        assert page.text_content('.gnnbatch-explorer .gx-node-eff') == f"{100*r['node_eff']:.1f} %"
        assert page.locator('.gnnbatch-explorer .gx-pad').count() == int((plan.shapes[0] > plan.real[0]).sum())
        assert page.locator('.gnnbatch-explorer .gx-draw rect').count() == 3 * int(plan.n_graph_real[0]) + int((plan.shapes[0] > plan.real[0]).sum())
        page.locator('.gnnbatch-explorer').screenshot(path=str(SHOTS/f"explorer_{alg.replace('^', '')}.png"))
        print(f"explorer: {alg} shown in {ms:.0f} ms (Playwright round trip)")

def test_no_errors_and_only_local_requests(page, served):
    assert page.log['errors'] == []
    assert page.log['hosts'] == {'127.0.0.1'}, page.log['hosts']
    size = (served[1]/'09_widgets.html').stat().st_size
    print(f"\n09_widgets.html: {size/1024:.0f} KiB")
    assert size < 1_000_000
