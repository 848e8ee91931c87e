"""The main job end to end (`gnnbatch compare` on a slice, then `gnnbatch recommend`), and the cost model on synthetic
timings with known parameters."""
import json, os, subprocess
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from gnnbatch_nb.measure.costmodel import fit_step_cost, compile_cost, CostModel, _profile_from_draws

def gnnbatch(*args, check=True):
    r = subprocess.run(['gnnbatch', *args], capture_output=True, text=True, timeout=900)
    if check and r.returncode != 0:
        raise AssertionError(f"gnnbatch {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

def test_compare_end_to_end_small(tmp_path):
    "gnnbatch compare --steps <small>: every algorithm, eager and compiled (Dynamo tracing), files, then recommend."
    out = tmp_path/'cmp'
    r = gnnbatch('compare', '--limit', '600', '--batch-size', '8', '--steps', '3', '--compiled-steps', '3',
                 '--backend', 'eager',
                 '--compile-sample', 'dynamic', 'static-64', '--out', str(out), '--json')
    res = json.loads(r.stdout)
    t = pd.DataFrame(res['table'])
    assert len(t) == 14 and set(t['mode']) == {'eager', 'compiled'}
    assert (t[t['mode'] == 'eager'].step_src == 'measured').all()
    dyn = t[(t['mode'] == 'compiled') & (t.algorithm == 'dynamic')].iloc[0]
    assert dyn.compiles == 1 and dyn.compiles_2000000 == 1            # one shape, one compilation, for ever
    s64 = t[(t['mode'] == 'compiled') & (t.algorithm == 'static-64')].iloc[0]
    assert s64.compiles_2000000 > s64.compiles_100000 - 1e-9 >= s64.shapes_per_epoch - 1e-9
    for f in ('compare.csv', 'steps.csv', 'compare.json', 'compare.png'): assert (out/f).stat().st_size > 0
    text = gnnbatch('recommend', '--from', str(out), '--steps', '1000').stdout
    assert 'vs_best' in text and 'compiled' in text

def test_compare_table_output_marks_projections(tmp_path):
    r = gnnbatch('compare', '--limit', '300', '--batch-size', '8', '--steps', '3', '--compiled-steps', '3',
                 '--backend', 'eager',
                 '--algorithms', 'dynamic', 'packing', '--compile-sample', 'dynamic', '--out', str(tmp_path/'c'))
    assert '*' in r.stdout and 'projected' in r.stdout and str(tmp_path/'c') in r.stdout

def test_compare_bad_input_is_one_line():
    r = gnnbatch('compare', '--algorithms', 'quickest', check=False)
    assert r.returncode == 2 and 'unknown algorithms' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = gnnbatch('recommend', '--from', '/no/such/folder', check=False)
    assert r.returncode == 2 and 'gnnbatch compare' in r.stderr

def _steps(coef, N, E, G, per_shape, noise, compile_s, rng):
    rows, s = [], 0
    for n, e, g in zip(N, E, G):
        for j in range(per_shape):
            t = (coef[0] + coef[1]*n + coef[2]*e + coef[3]*g) * rng.lognormal(0, noise)
            rows.append(dict(step=s, N=n, E=e, G=g, update_s=t + (compile_s if j == 0 else 0.0), compiles=int(j == 0)))
            s += 1
    return pd.DataFrame(rows)

@settings(max_examples=25, deadline=None)
@given(b=st.floats(5e-6, 5e-5), c=st.floats(5e-6, 5e-5), a=st.floats(0, 0.02), cc=st.floats(1, 100),
       seed=st.integers(0, 10_000))
def test_cost_model_recovers_known_parameters(a, b, c, cc, seed):
    "Noise-free synthetic timings: the per-node and per-edge costs and the compile cost come back."
    rng = np.random.default_rng(seed)
    N = rng.integers(100, 2000, 12); E = rng.integers(1_000, 40_000, 12); G = rng.choice([9, 17, 33, 65], 12)
    rec = _steps((a, b, c, 0.0), N, E, G, 4, 0.0, cc, rng)
    sc = fit_step_cost(rec)
    pred = sc(rec.N, rec.E, rec.G); true = a + b*rec.N + c*rec.E
    assert np.allclose(pred, true, rtol=1e-3, atol=1e-5)
    got, n, startup = compile_cost(rec, sc)
    assert n == 12 and abs(got - cc) < 1e-3 * cc + 1e-3 and np.isnan(startup)

@settings(max_examples=25, deadline=None)
@given(cc=st.floats(1, 100), c0=st.floats(0, 100), first=st.integers(0, 11), seed=st.integers(0, 10_000))
def test_startup_cost_is_separated(cc, c0, first, seed):
    "A process's first compilation costs c0 more: per-compile cost stays cc, c0 comes back, a fresh run adds it once."
    rng = np.random.default_rng(seed)
    N = rng.integers(100, 2000, 12); E = rng.integers(1_000, 40_000, 12); G = rng.choice([9, 17, 33, 65], 12)
    rec = _steps((0.01, 1e-5, 1e-5, 0.0), N, E, G, 4, 0.0, cc, rng).assign(first_compile=False)
    i = rec.index[rec.compiles > 0][first]
    rec.loc[i, 'first_compile'] = True; rec.loc[i, 'update_s'] += c0
    sc = fit_step_cost(rec)
    got, n, startup = compile_cost(rec, sc)
    assert n == 11 and abs(got - cc) < 1e-3 * cc + 1e-3 and abs(startup - c0) < 1e-3 * (cc + c0) + 1e-3
    cm = CostModel.fit(pd.concat([rec.assign(mode='eager'), rec.assign(mode='compiled')]))
    p = _profile_from_draws(np.arange(50) % 7); p.mean_shape = np.array([1000., 10000., 33.])
    step = float(cm.step['compiled'](*p.mean_shape))
    assert np.allclose(cm.total(p, 'compiled', 20), 20 * step + 7 * cm.compile_s['compiled'] + cm.startup_s)
    assert np.allclose(cm.total(p, 'compiled', 20, fresh=False), 20 * step + 7 * cm.compile_s['compiled'])
    assert np.allclose(cm.total(p, 'eager', 20), 20 * float(cm.step['eager'](*p.mean_shape)))      # eager never pays it

def test_total_and_break_even_by_hand():
    "Two one-shape profiles: T(S) = S·t + c; the break-even is where the lines cross."
    rec = _steps((0.0, 1e-5, 1e-5, 0.0), np.arange(100, 1300, 100), np.arange(1000, 13000, 1000), np.full(12, 33), 3,
                 0.0, 10.0,
                 np.random.default_rng(0)).assign(mode='compiled')
    cm = CostModel.fit(pd.concat([rec.assign(mode='eager'), rec]))
    p1 = _profile_from_draws(np.zeros(100, int)); p1.mean_shape = np.array([1000., 10000., 33.])
    p2 = _profile_from_draws(np.arange(100) % 5)                      # 5 shapes, 10 % cheaper steps
    p2.mean_shape = np.array([900., 9000., 33.])
    t1, t2 = 0.11, 0.099
    assert np.isclose(cm.total(p1, 'compiled', 1000)[0], 1000*t1 + 10.0, rtol=1e-3)
    be = cm.break_even(p2, 'compiled', p1, 'compiled')
    assert abs(be - 4*10.0/(t1 - t2)) / be < 0.01        # 4 extra compilations paid back by 11 ms per step
    assert cm.total(p1, 'eager', 10**6)[0] == pytest.approx(10**6 * t1, rel=1e-3)

def test_bench_validate_end_to_end(tmp_path):
    "gnnbatch bench validate: fit by compare, fresh-process runs, predictions beside measurements, files written."
    out = tmp_path/'val'
    r = gnnbatch('bench', 'validate', '--batch-size', '4', '--steps', '3', '--compiled-steps', '3',
                 '--backend', 'eager',
                 '--runs', 'dynamic:eager:3', 'static-64:compiled:4', '--out', str(out), '--json')
    res = json.loads(r.stdout)
    t = pd.DataFrame(res['table'])
    assert t[['algorithm', 'mode', 'steps']].values.tolist() == [['dynamic', 'eager', 3], ['static-64', 'compiled', 4]]
    assert (t.measured_s > 0).all() and (t.predicted_s > 0).all() and t.process_s.gt(t.measured_s).all()
    assert t.compiles.tolist() == t.predicted_compiles.astype(int).tolist()      # the plan's distinct shapes, exactly
    for f in ('validation.csv', 'steps.csv', 'winners.csv', 'machine.json', 'fit/compare.csv'):
        assert (out/f).stat().st_size > 0

def test_bench_validate_bad_runs_is_one_line():
    r = gnnbatch('bench', 'validate', '--runs', 'dynamic-eager-3', check=False)
    assert r.returncode == 2 and 'ALGORITHM:MODE:STEPS' in r.stderr and len(r.stderr.strip().splitlines()) == 1
