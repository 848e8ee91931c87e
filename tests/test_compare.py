"""The main job end to end (`gnnbatch compare` on a slice, then `gnnbatch recommend`), and the cost model on synthetic
timings with known parameters."""
import json, os, subprocess
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from gnnbatch_nb.measure.costmodel import fit_step_cost, compile_cost, CostModel, _profile_from_draws
from gnnbatch_nb.batching.registry import ALGORITHMS

def gnnbatch(*args, check=True):
    r = subprocess.run(['gnnbatch', *args], capture_output=True, text=True, timeout=900)
    if check and r.returncode != 0:
        raise AssertionError(f"gnnbatch {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

def test_compare_end_to_end_small(tmp_path):
    "gnnbatch compare --steps <small>: every algorithm, eager and compiled (Dynamo tracing), files, then recommend."
    out = tmp_path/'cmp'
    r = gnnbatch('compare', '--limit', '600', '--batch-size', '8', '--steps', '3', '--budget', '0',
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
    info = json.loads((out/'compare.json').read_text())
    for S in (100_000, 2_000_000):                       # the totals are made of the figures the table shows
        c = t[f'compiles_{S}']
        by_hand = (S * t.step_ms / 1e3 + c * t.compile_s + (c > 0) * info['startup_s']) / 3600
        np.testing.assert_allclose(by_hand, t[f'hours_{S}'], rtol=1e-9)
        assert t[f'best_{S}'].sum() == 1 and t[f'best_{S}'][t[f'group_{S}']].any()
    assert set(info['settings']['fit']) == {'eager', 'compiled'} and info['settings']['rotated']
    assert info['settings']['stopped'] == '3 rounds done' and info['settings']['horizons'] == [100_000, 2_000_000]
    assert [v.startswith(f'at {S:,} steps the fastest group') for v, S in zip(res['verdicts'], (100_000, 2_000_000))]
    steps = pd.read_csv(out/'steps.csv')
    timed = steps[steps.seq >= 0].sort_values('seq')                 # eager and compiled steps in one rotation
    n = len(ALGORITHMS) + 2
    assert len(timed) == 3 * n and timed.groupby(['algorithm', 'mode']).size().eq(3).all()
    assert (timed.groupby('round').seq.agg(['min', 'max']).diff(axis=1)['max'] == n - 1).all()
    text = gnnbatch('recommend', '--from', str(out), '--steps', '1000').stdout
    assert 'vs_best' in text and 'compiled' in text

def test_compare_table_output_marks_projections(tmp_path):
    r = gnnbatch('compare', '--limit', '300', '--batch-size', '8', '--steps', '3', '--budget', '0',
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
    r = gnnbatch('bench', 'validate', '--batch-size', '4', '--steps', '3',
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

# ---- issue 13: a comparison whose answer can be trusted -------------------------------------------------------------
from gnnbatch_nb.sizes import qm9_like
from gnnbatch_nb.measure.costmodel import ShapeProfile
from gnnbatch_nb.measure.steps import summarise, rotation, measure_rotating
from gnnbatch_nb.measure.compare import (tabulate, recommend, format_table, save_compare, complete_table, Comparison,
                                         disagreements, shape_inversions, verdict_words)

def _synthetic_run(algorithm, mode, step_s, noise, rng, steps=25, compile_s=0.0, shape=(600, 10_000, 33)):
    "A run as `measure` returns it: `steps` steps of one shape around `step_s` (lognormal noise), a compile first."
    t = step_s * rng.lognormal(0, noise, steps)
    comp = [int(mode != 'eager' and i == 0) for i in range(steps)]
    rec = pd.DataFrame(dict(step=np.arange(steps), N=shape[0] + 10 * (np.arange(steps) % 7), E=shape[1], G=shape[2],
                            n=shape[0], e=shape[1], g=shape[2] - 1, batching_s=1e-3,
                            update_s=t + np.array(comp) * compile_s, compiles=comp, first_compile=False,
                            compile_s=0.0, loss=1.0))
    return dict(spec=dict(algorithm=algorithm, mode=mode), records=rec, summary=summarise(rec))

@pytest.fixture(scope='module')
def sizes(): return qm9_like(3000, seed=1)

def _profiles(sizes, algs): return {a: ShapeProfile.simulate(sizes, a, 16) for a in algs}

def _totals_by_hand(t, cm, S):
    "Every row's total from the row's own figures: S x step + compilations x s/compile + the start-up once."
    c = t[f'compiles_{S}']
    return (S * t.step_ms / 1e3 + c * t.compile_s + (c > 0) * cm.startup_s) / 3600

def test_clear_winner_when_it_beats_the_runner_up_beyond_the_interval(sizes):
    "dynamic 100 ms ± 1 %, packing 130 ms ± 1 % (both eager, measured): dynamic wins outright at every horizon."
    rng = np.random.default_rng(0)
    runs = [_synthetic_run('dynamic', 'eager', 0.100, 0.01, rng), _synthetic_run('packing', 'eager', 0.130, 0.01, rng)]
    t, _, cm = tabulate(runs, _profiles(sizes, ['dynamic', 'packing']), modes=('eager',), horizons=(1000, 10**6))
    for h in (1000, 10**6):
        assert t[f'winner_{h}'].tolist() == [True, False] and not t[f'tie_{h}'].any()
        assert t[f'hi_hours_{h}'][0] < t[f'lo_hours_{h}'][1]
    assert (t.step_src == 'measured').all()
    text = format_table(t, (1000, 10**6))
    assert '<' in text and 'fastest group (none shown more than 10 % slower than the best' in text
    assert 'avoid: packing / eager (1.3× slower)' in text.splitlines()[-1]

def test_a_difference_within_the_interval_is_a_tie(sizes):
    "dynamic 100 ms and packing 101 ms with 10 % noise: the intervals overlap, the table and recommend say tie."
    rng = np.random.default_rng(1)
    runs = [_synthetic_run('dynamic', 'eager', 0.100, 0.10, rng), _synthetic_run('packing', 'eager', 0.101, 0.10, rng),
            _synthetic_run('static-2^N', 'eager', 0.300, 0.01, rng)]
    profiles = _profiles(sizes, ['dynamic', 'packing', 'static-2^N'])
    t, _, cm = tabulate(runs, profiles, modes=('eager',), horizons=(1000,))
    assert not t.winner_1000.any() and t.best_1000.sum() == 1
    assert set(t.algorithm[t.tie_1000]) == {'dynamic', 'packing'}          # the slow one does not tie
    assert set(t.algorithm[t.group_1000]) == {'dynamic', 'packing'} and t.avoid_1000.tolist()[2]
    text = format_table(t, (1000,))
    assert 'dynamic / eager' in text.splitlines()[-1] and '=' in text and 'avoid: static-2^N / eager' in text
    rk = recommend(cm, profiles, 1000)
    assert not rk.winner.any() and set(rk.algorithm[rk.tie]) == {'dynamic', 'packing'}
    assert set(rk.algorithm[rk.group]) == {'dynamic', 'packing'}
    assert rk.algorithm[0] == t.algorithm[t.best_1000].item() and rk.attrs['verdict'] == text.splitlines()[-1]

def test_totals_are_made_of_the_figures_shown(sizes):
    "A measured compiled row (one shape) and projected ones: every total is S x step_ms + compiles x s/compile (+ c0)."
    rng = np.random.default_rng(2)
    algs = ['dynamic', 'packing', 'static-64']
    runs = [_synthetic_run(a, 'eager', s, 0.02, rng, shape=(600 + 40 * i, 10_000 + 900 * i, 17))
            for i, (a, s) in enumerate(zip(algs, (0.10, 0.11, 0.12)))]
    runs.append(_synthetic_run('dynamic', 'compiled', 0.06, 0.02, rng, steps=6, compile_s=20.0))   # faster than the fit
    profiles = _profiles(sizes, algs)
    t, _, cm = tabulate(runs, profiles, horizons=(1000, 10**6))
    row = t[(t.algorithm == 'dynamic') & (t['mode'] == 'compiled')].iloc[0]
    assert row.step_src == 'measured' and row.compile_src == 'measured'
    assert row.step_ms == pytest.approx(1e3 * runs[-1]['summary']['steady_median'], rel=1e-12)
    assert row.step_ms != pytest.approx(1e3 * float(cm.step['compiled'](*profiles['dynamic'].mean_shape)), rel=1e-3)
    assert (t[t['mode'] == 'compiled'].algorithm != 'dynamic').eq(t[t['mode'] == 'compiled'].step_src == 'projected').all()
    for S in (1000, 10**6):
        np.testing.assert_allclose(_totals_by_hand(t, cm, S), t[f'hours_{S}'], rtol=1e-12)
        best = t[t[f'hours_{S}'] == t[f'hours_{S}'].min()]
        assert t[f'best_{S}'].tolist() == (t.index == best.index[0]).tolist()
        rk = recommend(cm, profiles, S)                                           # recommend ranks the same figures
        assert rk.total_h.iloc[0] == pytest.approx(best[f'hours_{S}'].iloc[0], rel=1e-12)

def test_rotation_order():
    assert rotation(2, 3) == [0, 1, 1, 0, 0, 1]
    order = np.array(rotation(5, 10)).reshape(10, 5)
    assert all(sorted(r) == list(range(5)) for r in order)
    assert all(np.bincount(order[:5, j], minlength=5).tolist() == [1] * 5 for j in range(5))
    with pytest.raises(ValueError, match='rounds >= 1'): rotation(3, 0)

@pytest.fixture(scope='module')
def small_qm9():
    from gnnbatch_nb.data.datasets import load_dataset
    return load_dataset('qm9').subset(np.arange(400))

def test_rotating_steps_follow_the_rotation(small_qm9):
    "Three runs, four rounds: the steps were taken one of each in turn after each run's first step."
    algs = ['dynamic', 'static-64', dict(algorithm='packing', mode='compiled')]
    res = measure_rotating(small_qm9, 'schnet', algs, 4, rounds=4, warmup=1, backend='eager')['results']
    rec = pd.concat([r['records'].assign(run=i) for i, r in enumerate(res)]).query('seq >= 0').sort_values('seq')
    assert rec.seq.tolist() == list(range(12)) and rec.run.tolist() == rotation(3, 4)
    assert all(r['records'].step.tolist() == [0, 1, 2, 3, 4] for r in res)
    assert all(r['summary']['steady_lo'] <= r['summary']['steady_median'] <= r['summary']['steady_hi'] for r in res)

def test_save_compare_keeps_the_results_when_the_folder_cannot_be_written(sizes, tmp_path):
    rng = np.random.default_rng(3)
    runs = [_synthetic_run('dynamic', 'eager', 0.1, 0.01, rng), _synthetic_run('packing', 'eager', 0.12, 0.01, rng)]
    profiles = _profiles(sizes, ['dynamic', 'packing'])
    t, rec, cm = tabulate(runs, profiles, modes=('eager',))
    res = Comparison(t, cm, profiles, dict(model='schnet', dataset='x', batch_size=16), dict(cpu='test', date='today'),
                     rec)
    blocker = tmp_path/'a-file'; blocker.write_text('x')
    with pytest.warns(UserWarning, match='a copy of the results went to'):
        paths = save_compare(res, blocker/'out')
    assert str(blocker/'out') in paths['note'] and len(pd.read_csv(paths['table'])) == len(t)
    assert Path(paths['json']).exists() and not (blocker/'out').exists()

def test_old_tables_read_with_point_intervals():
    t = pd.read_csv(Path(__file__).resolve().parent.parent/'results'/'models'/'schnet'/'compare.csv')
    c = complete_table(t)
    assert (c.step_lo_ms == c.step_ms).all() and c.best_100000.sum() == 1 and c.group_100000.any()
    assert 'total @100,000' in format_table(c)

# ---- issue 19: a verdict a user can act on ---------------------------------------------------------------------------
def _cost_model_with(measured:dict, n_shapes:int=8) -> CostModel:
    "Eager and compiled steps on a line (compiled 20 % faster at every shape), and `measured` compiled figures."
    rows = []
    for mode, f in (('eager', 1.0), ('compiled', 0.8)):
        for N in range(100, 100 * (n_shapes + 1), 100):
            rows += [dict(N=N, E=10 * N, G=9, update_s=f * (2.0 + 0.001 * N) / 1e3 * (1 + 1e-3 * k), compiles=0,
                          step=k + 1, mode=mode) for k in range(5)]
    cm = CostModel.fit(pd.DataFrame(rows))
    cm.measured = measured
    return cm

def test_a_projection_that_disagrees_with_a_measurement_is_flagged():
    "packing measured 40 % slower than the fit projects at its own shape: flagged, and the measured figure is used."
    ms = lambda N, f=1.0: f * 0.8 * (2.0 + 0.001 * N) / 1e3
    cm = _cost_model_with({('dynamic', 'compiled'): dict(mean_shape=np.array([300., 3000, 9]), step_s=ms(300)),
                           ('packing', 'compiled'): dict(mean_shape=np.array([400., 4000, 9]), step_s=ms(400, 1.4)),
                           ('static-64', 'compiled'): dict(mean_shape=np.array([500., 5000, 9]), step_s=np.nan,
                                                           sample_shape=np.array([350., 3500, 9]),
                                                           sample_step_s=ms(350, 1.3))})
    flags = disagreements(cm)
    assert [f.split(' / ')[0] for f in flags] == ['packing', 'static-64'] and all('measured figure is used' in f
                                                                                   for f in flags)
    p = _profile_from_draws(np.zeros(10, int), 'static-64'); p.mean_shape = np.array([500., 5000, 9])
    t, _, _, src = cm.step_time(p, 'compiled')                         # the sampled pair: anchored on its sample
    f = lambda N: float(cm.step['compiled'](N, 10 * N, 9))
    assert src == 'projected' and t == pytest.approx(ms(350, 1.3) * f(500) / f(350), rel=1e-9)
    assert shape_inversions(cm) == [] and disagreements(_cost_model_with({})) == []

def test_a_smaller_shape_much_slower_than_a_larger_one_is_flagged():
    cm = _cost_model_with({('dynamic', 'compiled'): dict(mean_shape=np.array([640., 10240, 33]), step_s=0.031),
                           ('static-64', 'compiled'): dict(mean_shape=np.array([576., 9216, 33]), step_s=0.021),
                           ('static-2^N', 'compiled'): dict(mean_shape=np.array([1024., 16384, 33]), step_s=0.025)})
    got = shape_inversions(cm)           # dynamic (640) is 24 % slower than static-2^N on the larger 1024
    assert len(got) == 1 and got[0].startswith('dynamic / compiled') and 'static-2^N / compiled' in got[0]

@given(vs=st.lists(st.floats(1.0, 5.0, allow_subnormal=False), min_size=1, max_size=8),
       margin=st.floats(0.0, 0.2, allow_subnormal=False))
@settings(max_examples=50, deadline=None)
def test_the_fastest_group_and_the_words(vs, margin):
    "Exact totals (no interval): the group is every pair within the margin of the best, named in the words."
    from gnnbatch_nb.measure.costmodel import fastest_group, AVOID_RATIO
    est = np.array([1.0] + vs); ratio = est / est.min()
    group = fastest_group(est, est, est, margin)
    assert group.tolist() == (ratio <= 1 + margin).tolist()
    names = [f'a{i} / eager' for i in range(len(est))]
    avoid = ~group & (ratio >= AVOID_RATIO)
    words = verdict_words(names, ratio, group, avoid, 1000, margin)
    head, _, tail = words.partition('; avoid: ')
    assert all((names[i] + ' (') in head for i in np.flatnonzero(group))
    assert all((names[i] + ' (') in tail for i in np.flatnonzero(avoid))

# ---- issue 20 for compare: it owns its folder, an interrupt keeps what was measured ---------------------------------
SMALL = ('--limit', '300', '--batch-size', '8', '--backend', 'eager', '--algorithms', 'dynamic', 'packing',
         '--compile-sample', 'dynamic')

def test_a_second_compare_into_one_folder_is_refused_unless_told(tmp_path):
    out = tmp_path/'c'
    gnnbatch('compare', *SMALL, '--steps', '2', '--budget', '0', '--out', str(out))
    first = (out/'compare.json').read_text()
    r = gnnbatch('compare', *SMALL, '--steps', '2', '--budget', '0', '--out', str(out), check=False)
    assert r.returncode == 2 and '--overwrite' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (out/'compare.json').read_text() == first                     # nothing lost, nothing mixed
    gnnbatch('compare', *SMALL, '--steps', '2', '--budget', '0', '--out', str(out), '--overwrite')
    old = [p for p in tmp_path.iterdir() if p.name.startswith('c.old-')]
    assert len(old) == 1 and (old[0]/'compare.json').read_text() == first
    assert sorted(p.name for p in out.iterdir()) == sorted(['compare.csv', 'steps.csv', 'compare.json', 'compare.png'])

def test_compare_checks_its_backend_and_device_before_work():
    for flags in (('--backend', 'inductr'), ('--device', 'cpuu')):
        r = gnnbatch('compare', *flags, check=False)
        assert r.returncode == 2 and flags[0] in r.stderr and len(r.stderr.strip().splitlines()) == 1

@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_in_compare_keeps_the_rounds_measured(tmp_path, sig):
    "SIGINT (Ctrl-C) or SIGTERM to a real `gnnbatch compare` in its rounds: exit 130, one line, a partial comparison."
    import signal, time
    out = tmp_path/'c'
    p = subprocess.Popen(['gnnbatch', 'compare', *SMALL, '--steps', '2', '--budget', '600', '--out', str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    line = p.stderr.readline()                                           # "compare: ... measured in rotation ..."
    assert 'in rotation' in line, line
    time.sleep(25)                                                       # the first rounds
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert 'interrupted after' in err and 'saved in' in err and 'Traceback' not in err and time.time() - t0 < 200
    info = json.loads((out/'compare.json').read_text())
    assert info['settings']['partial'] and info['settings']['stopped'] == 'interrupted'
    assert info['settings']['pairs_measured']
    assert gnnbatch('recommend', '--from', str(out), '--steps', '1000').returncode == 0
