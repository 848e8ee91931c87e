"""The comparison panel live: Voila serves a one-cell notebook on 127.0.0.1, Chromium presses Run, the kernel measures.

Voila's `lab` template asks a CDN for two Font Awesome style sheets; those requests (and any other to a host that is not
127.0.0.1) are aborted, so the test runs offline."""
import json, os, socket, subprocess, sys, time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT/'_screenshots'
APP = """from gnnbatch_nb.widgets import ComparisonPanel
ComparisonPanel({results!r}, dataset='qm9', model='schnet', batch_size=16, algorithms=('static-64', 'packing'),
                modes=('eager',), measure_steps=3, graphs=300, fallback=False)"""

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_port(port:int, proc, timeout:float=90):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: raise RuntimeError(f'voila exited with {proc.returncode}')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0: return time.time() - t0
        time.sleep(0.25)
    raise TimeoutError(f'voila did not open port {port} in {timeout} s')

@pytest.fixture(scope='module')
def voila(tmp_path_factory):
    d = tmp_path_factory.mktemp('app')
    nb = dict(cells=[dict(cell_type='code', id='a0a0a0a0', metadata={}, execution_count=None, outputs=[],
                          source=APP.format(results=str(ROOT/'results')))],
              metadata={'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}}, nbformat=4, nbformat_minor=5)
    (d/'app.ipynb').write_text(json.dumps(nb))
    port = free_port()
    env = {**os.environ, 'OMP_NUM_THREADS': '2', 'MPLBACKEND': 'Agg'}
    log = open(d/'voila.log', 'w')
    proc = subprocess.Popen([str(Path(sys.executable).parent/'voila'), 'app.ipynb', '--no-browser', f'--port={port}',
                             '--Voila.ip=127.0.0.1'], cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        print(f'\nvoila: port open after {wait_port(port, proc):.1f} s')
        yield f'http://127.0.0.1:{port}/'
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()

def test_run_measures_in_the_kernel(voila):
    from playwright.sync_api import sync_playwright
    saved = pd.read_csv(ROOT/'results'/'batch_sizes'/'batch_sizes.csv')
    saved = saved[(saved.dataset == 'qm9') & (saved.model == 'schnet') & (saved.batch_size == 16)].set_index('algorithm').step_ms
    mtimes = {p: p.stat().st_mtime for p in (ROOT/'results').rglob('*') if p.is_file()}
    started = datetime.now().replace(microsecond=0)
    aborted, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'])
        pg = browser.new_page(viewport={'width': 1300, 'height': 1000})
        def route(r):
            if urlparse(r.request.url).hostname == '127.0.0.1': r.continue_()
            else: aborted.append(r.request.url); r.abort()
        pg.route('**/*', route)
        pg.on('pageerror', lambda e: errors.append(str(e)))
        t0 = time.time()
        pg.goto(voila, timeout=180_000)
        pg.wait_for_selector('.gb-run button, button.gb-run', timeout=180_000)
        pg.wait_for_selector('.gb-status >> text=Saved result', timeout=60_000)
        print(f'voila: panel shown after {time.time() - t0:.1f} s')
        t1 = time.time()
        pg.click('.gb-run button, button.gb-run')
        pg.wait_for_selector('.gb-live', timeout=240_000)
        print(f'voila: Run -> new result in {time.time() - t1:.1f} s')
        status = pg.text_content('.gb-status')
        when = datetime.fromisoformat(pg.get_attribute('.gb-live', 'data-measured-at'))
        rows = pg.eval_on_selector_all('.gb-table tr[data-algorithm]', 'rs => rs.map(r => [r.dataset.algorithm, r.dataset.mode, '
                                       'Number(r.children[4].textContent)])')
        SHOTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(SHOTS/'voila_panel_after_run.png'), full_page=True)
        browser.close()
    assert 'Measured now in this kernel' in status and '300 training graphs' in status
    assert started <= when <= datetime.now()
    assert sorted((a, m) for a, m, _ in rows) == [('packing', 'eager'), ('static-64', 'eager')]
    for a, _, ms in rows: assert ms > 0 and abs(ms / saved[a] - 1) > 1e-6, (a, ms, saved[a])   # a new measurement, not the file's
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes, 'Run must not write or touch the results files'
    assert errors == []
    assert all(urlparse(u).hostname != '127.0.0.1' for u in aborted)
    print(f'voila: {len(aborted)} outside request(s) aborted: {sorted({urlparse(u).hostname for u in aborted})}')
