"""Experiment runner: resume, failures recorded and retried, a valid file after an interruption, grids, isolation."""
import os, time
import numpy as np, pandas as pd, pytest, torch
torch.set_num_threads(1)
from gnnbatch_nb.data.qm9 import qm9
import gnnbatch_nb.experiments.runner as runner
import gnnbatch_nb.batching.registry as registry
from gnnbatch_nb.experiments.runner import (SPEC_KEYS, DEFAULT_SPEC, expand_grid, run_key,
    run_grid, run_isolated, load_results, curves_path)

FAST = dict(batch_size=8, steps=3)

@pytest.fixture(scope='module')
def small():
    return qm9(verbose=False).subset(np.arange(300))

def test_expand_grid_and_keys():
    g = expand_grid(algorithm=['dynamic', 'static-64'], seed=range(3), steps=5)
    assert len(g) == 6 and all(list(s) == list(SPEC_KEYS) for s in g)
    assert g[0] == {**DEFAULT_SPEC, 'algorithm': 'dynamic', 'seed': 0, 'steps': 5}
    assert len({run_key(s) for s in g}) == 6
    assert run_key(dict(batch_size=np.int64(8), lr=0.001)) == run_key(dict(batch_size=8.0, lr=1e-3))
    with pytest.raises(ValueError, match=r"allowed: \['dataset', 'model'"): expand_grid(algo=['dynamic'])
    with pytest.raises(ValueError, match='unknown spec key'): run_key(dict(batchsize=8))
    assert len(expand_grid()) == 1 and expand_grid()[0] == DEFAULT_SPEC

def test_resume_skips_finished_runs(small, tmp_path):
    out = tmp_path/'r.csv'
    grid = expand_grid(algorithm=['dynamic', 'static-64'], **FAST)
    a = run_grid(grid, out, stores={'qm9': small}, eval_limit=20, progress=False)
    assert a.status.tolist() == ['ok', 'ok'] and a.test_mae.notna().all()
    assert list(a.columns[:len(SPEC_KEYS) + 2]) == list(SPEC_KEYS) + ['status', 'error']
    stamp = os.stat(out).st_mtime_ns
    b = run_grid(grid, out, stores={'qm9': small}, eval_limit=20, progress=False)
    assert os.stat(out).st_mtime_ns == stamp                     # nothing written: nothing ran
    pd.testing.assert_frame_equal(a, b)
    c = run_grid(grid + expand_grid(algorithm='static-2^N', **FAST), out, stores={'qm9': small}, eval_limit=20,
                 progress=False)
    assert len(c) == 3 and c.timestamp.iloc[:2].tolist() == a.timestamp.tolist()

def test_failures_are_recorded_and_retried(small, tmp_path, monkeypatch):
    out = tmp_path/'r.csv'
    grid = expand_grid(algorithm=['dynamic', 'nope', 'static-64'], **FAST)
    r = run_grid(grid, out, stores={'qm9': small}, eval_limit=20, progress=False)
    assert r.status.tolist() == ['ok', 'failed', 'ok']
    assert r.error.iloc[1].startswith('ValueError: ') and 'nope' in r.error.iloc[1]
    assert np.isnan(r.combined_median.iloc[1]) and r.error.iloc[0] == ''     # NaN timings; no error when ok
    ok_stamps = r.timestamp.iloc[[0, 2]].tolist()
    # "fix" the cause (make 'nope' a name of dynamic batching): the next call retries only the failed spec
    monkeypatch.setitem(registry._ALIASES, 'nope', 'dynamic')
    r2 = run_grid(grid, out, stores={'qm9': small}, eval_limit=20, progress=False, retry_failed=False)
    assert r2.status.tolist() == ['ok', 'failed', 'ok']          # not retried
    r3 = run_grid(grid, out, stores={'qm9': small}, eval_limit=20, progress=False)
    assert r3.status.tolist() == ['ok', 'ok', 'ok'] and r3.timestamp.iloc[[0, 2]].tolist() == ok_stamps
    assert len(load_results(out)) == 3                           # replaced, not duplicated

def test_interrupted_grid_leaves_a_valid_file(small, tmp_path, monkeypatch):
    out = tmp_path/'r.csv'
    grid = expand_grid(seed=[0, 1, 2], **FAST)
    real, calls = runner.run_one, []
    def flaky(spec, *a, **k):
        calls.append(spec['seed'])
        if spec['seed'] == 1: raise KeyboardInterrupt
        return real(spec, *a, **k)
    monkeypatch.setattr(runner, 'run_one', flaky)
    with pytest.raises(KeyboardInterrupt): run_grid(grid, out, stores={'qm9': small}, eval_limit=20, progress=False)
    done = load_results(out)
    assert done.seed.tolist() == [0] and done.status.tolist() == ['ok']
    assert [p.name for p in tmp_path.iterdir()] == ['r.csv']      # no temporary file left behind
    monkeypatch.setattr(runner, 'run_one', real)
    r = run_grid(grid, out, stores={'qm9': small}, eval_limit=20, progress=False)   # resume
    assert r.seed.tolist() == [0, 1, 2] and (r.status == 'ok').all()
    assert r.timestamp.iloc[0] == done.timestamp.iloc[0]

def test_learning_curves(small, tmp_path):
    out = tmp_path/'r.csv'
    r = run_grid(expand_grid(batch_size=8, steps=5), out, stores={'qm9': small}, eval_limit=20, eval_every=2,
                 progress=False)
    cv = load_results(curves_path(out))
    assert curves_path(out).name == 'r_curves.csv'
    assert cv.step.tolist() == [0, 2, 4, 5] and (cv.split == 'val').all() and (cv.run_key == r.run_key.iloc[0]).all()
    assert cv.mae.iloc[-1] == pytest.approx(r.val_mae.iloc[0])
    assert np.isnan(cv.loss.iloc[0]) and cv.loss.iloc[1:].notna().all()

def test_isolated_run(small, tmp_path):
    out = tmp_path/'r.csv'
    spec = dict(algorithm='static-64', **FAST)
    r = run_grid([spec], out, stores={'qm9': small}, eval_limit=20, progress=False, isolate=True)
    assert r.status.tolist() == ['ok'], r.error.tolist()
    ref = runner.run_one(spec, small, eval_limit=20)
    assert r.loss_last.iloc[0] == pytest.approx(ref['loss_last'], rel=1e-6)
    assert r.test_mae.iloc[0] == pytest.approx(ref['test_mae'], rel=1e-6)

class _Crash:
    def __reduce__(self): return (os._exit, (3,))

def test_isolated_crash_is_recorded(tmp_path):
    r = run_isolated(dict(FAST), _Crash())
    assert r['status'] == 'failed' and 'exit code 3' in r['error']

def test_two_datasets_use_their_stores(small, tmp_path, monkeypatch):
    other = qm9(verbose=False).subset(np.arange(1000, 1200))
    seen = []
    real = runner.run_one
    def spy(spec, store, *a, **k):
        seen.append((spec['dataset'], store.n_graph)); return real(spec, store, *a, **k)
    monkeypatch.setattr(runner, 'run_one', spy)
    loaded = []
    monkeypatch.setattr(runner, 'load_dataset', lambda name, *a, **k: loaded.append(name) or other)
    grid = expand_grid(dataset=['qm9', 'mp36k'], **FAST)
    r = run_grid(grid, tmp_path/'r.csv', stores={'qm9': small}, eval_limit=20, progress=False)
    assert r.status.tolist() == ['ok', 'ok'] and r.dataset.tolist() == ['qm9', 'mp36k']
    assert seen == [('qm9', 300), ('mp36k', 200)] and loaded == ['mp36k']   # given store used; missing one loaded once
    assert r.n_test.tolist() == [20, 20]
