"""The numbers the widgets' static views embed are those `recommend` and `make_plan(...).report()` give; bad input fails clearly."""
import json, re
import numpy as np
import pytest
from pathlib import Path
from gnnbatch_nb.batching.registry import ALGORITHMS, make_plan
from gnnbatch_nb.measure.compare import recommend
from gnnbatch_nb.widgets import (load_result_grid, load_stores, grid_profiles, panel_data, panel_html, panel_rank, explore_plan,
                                 explorer_data, explorer_html, training_sizes, decode_steps, encode_steps, check_steps)

RESULTS = Path(__file__).resolve().parent.parent/'results'

@pytest.fixture(scope='module')
def grid(): return load_result_grid(RESULTS)

@pytest.fixture(scope='module')
def profiles(grid): return grid_profiles(grid)

@pytest.fixture(scope='module')
def embedded(grid, profiles):
    "The JSON inside the panel's HTML, read back as a page would."
    page = panel_html(panel_data(grid, profiles))
    m = re.search(r'<script type="application/json">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))

def total_from_embedded(c, P, a, m, S, step='step_s'):
    "The cost model's formula on the embedded figures: steps x step time + compilations x compile time + start-up."
    fs = decode_steps(P[a]['fs'])
    if m == 'eager': k = 0.0
    elif S <= P[a]['n']: k = float(np.searchsorted(fs, S, side='left'))
    else:
        f1, f2, n = P[a]['f1'], P[a]['f2'], P[a]['n']
        f0 = f1 * (f1 - 1) / 2 if f2 == 0 else f1**2 / (2 * f2)
        k = len(fs) + (f0 * (1 - (1 - f1 / (n * f0 + f1)) ** (S - n)) if f0 > 0 and f1 > 0 else 0)
    if m == 'compiled-dynamic': k = min(k, c['dynamic_compiles'])
    return S * c[step][m][a] + k * (c['compile_pair_s'][m][a] or 0.0) + (k > 0) * (c['startup_s'] or 0.0)

def embedded_verdict(c, P, S):
    "(best pair, clear winner?, pairs tying) as the page's script decides them from the embedded intervals."
    pairs = [(a, m) for a in c['algorithms'] for m in c['modes']]
    tot = {p: [total_from_embedded(c, P, *p, S, k) for k in ('step_s', 'step_lo_s', 'step_hi_s')] for p in pairs}
    best = min(pairs, key=lambda p: tot[p][0])
    clear = all(tot[best][2] < tot[p][1] for p in pairs if p != best)
    group = {p for p in pairs if tot[p][1] <= (1 + 0.10) * tot[best][2]}      # the page's fastest group (margin 10 %)
    return best, clear, set() if clear else {p for p in pairs if tot[p][1] <= tot[best][2]}, group

def test_grid_holds_the_committed_cells(grid):
    assert ('qm9', 'painn', 32) in grid and ('mp36k', 'schnet', 128) in grid
    assert set(grid[('qm9', 'mpeu', 32)]['model'].step) == {'eager', 'compiled', 'compiled-dynamic'}
    assert list(grid[('qm9', 'schnet', 16)]['model'].step) == ['eager']

@pytest.mark.parametrize('steps', [1, 700, 25_000, 100_000, 2_000_000, 3e8])
def test_embedded_totals_equal_recommend(grid, profiles, embedded, steps):
    for (d, mdl, b), cell in grid.items():
        c, P = embedded['cells'][f'{d}|{mdl}|{b}'], embedded['profiles'][f'{d}|{b}']
        algs = list(dict.fromkeys(cell['table'].algorithm))
        ref = recommend(cell['model'], {a: profiles[(d, b)][a] for a in algs}, steps)
        got = [total_from_embedded(c, P, a, m, steps) for a, m in zip(ref.algorithm, ref['mode'])]
        np.testing.assert_allclose(got, 3600 * ref.total_h.to_numpy(), rtol=1e-12)
        best, clear, ties, group = embedded_verdict(c, P, steps)
        assert best == (ref.algorithm[0], ref['mode'][0])
        assert clear == bool(ref.winner.iloc[0]) and ties == set(zip(ref.algorithm[ref.tie], ref['mode'][ref.tie]))
        assert group == set(zip(ref.algorithm[ref.group], ref['mode'][ref.group]))

def test_measured_figures_reach_the_page(grid, profiles):
    "A cell whose model carries measured figures (as a new `compare.json` does): the page and `recommend` use them."
    import copy
    cell = copy.deepcopy(grid[('qm9', 'schnet', 32)])
    P = profiles[('qm9', 32)]
    cm = cell['model']
    fit = cm.step_time(P['packing'], 'eager')[0]
    cm.measured[('packing', 'eager')] = dict(step_s=0.5 * fit, step_lo_s=0.49 * fit, step_hi_s=0.51 * fit,
                                             compile_s=float('nan'), mean_shape=P['packing'].mean_shape)
    c = panel_data({('qm9', 'schnet', 32): cell}, profiles)['cells']['qm9|schnet|32']
    assert c['step_s']['eager']['packing'] == 0.5 * fit and c['step_lo_s']['eager']['packing'] == 0.49 * fit
    ref = recommend(cm, {a: P[a] for a in c['algorithms']}, 1000, ['eager'])
    assert (ref.algorithm[0], ref['mode'][0], bool(ref.winner[0])) == ('packing', 'eager', True)   # half the time: clear
    emb = embedded_verdict(dict(c, modes=['eager']), panel_data({('qm9', 'schnet', 32): cell}, profiles)['profiles']['qm9|32'], 1000)
    assert emb[:2] == (('packing', 'eager'), True)

def test_embedded_flags_follow_the_saved_table(grid, embedded):
    t = grid[('qm9', 'schnet', 32)]['table']
    c = embedded['cells']['qm9|schnet|32']
    for _, r in t.iterrows():
        mm = c['measured_ms'][r['mode']][r.algorithm]
        assert (mm is None) == (r.step_src != 'measured')
        if mm is not None: assert mm == pytest.approx(r.step_ms, rel=1e-12)
        assert c['compile_measured'][r['mode']][r.algorithm] == (r.compile_src == 'measured')

def test_profiles_match_the_saved_table(grid, profiles):
    t = grid[('qm9', 'schnet', 32)]['table'].groupby('algorithm').node_eff.first()
    for a, e in t.items(): assert profiles[('qm9', 32)][a].node_eff == pytest.approx(e, rel=1e-12)

def test_encode_roundtrip():
    rng = np.random.default_rng(0)
    fs = np.unique(rng.integers(0, 10**6, 3000))
    assert (decode_steps(encode_steps(fs)) == fs).all()

def test_explorer_embeds_the_plans_reports():
    sets = training_sizes(('qm9', 'mp36k'))
    data = explorer_data(sets, batch_sizes=(16, 64))
    page = explorer_html(data)
    emb = json.loads(re.search(r'<script type="application/json">(.*?)</script>', page, re.S).group(1))
    for key in ('qm9|packing|16|0', 'mp36k|static-64|64|0', 'qm9|bucketing|64|8', 'mp36k|concat|16|0'):
        d, a, b, k = key.split('|')
        p = make_plan(sets[d], a, int(b), **(dict(n_buckets=int(k)) if a == 'bucketing' else {}))
        r = p.report()
        for f in ('node_eff', 'edge_eff', 'graph_eff', 'n_shapes', 'n_batch', 'graphs_per_batch_mean'):
            assert emb['plans'][key][f] == r[f], (key, f)
        assert sum(emb['plans'][key]['batch']['nodes']) == int(p.n_node_real[0])
        assert emb['plans'][key]['batch']['shape'] == [int(x) for x in p.shapes[0]]

def test_bad_input_fails_clearly(grid, profiles):
    cell = grid[('qm9', 'schnet', 32)]
    with pytest.raises(ValueError, match='positive number'): panel_rank(cell, profiles[('qm9', 32)], 0)
    with pytest.raises(ValueError, match='positive number'): check_steps(-5)
    with pytest.raises(ValueError, match='number of training steps'): check_steps('many')
    with pytest.raises(ValueError, match='nothing to rank'): panel_rank(cell, profiles[('qm9', 32)], 10, algorithms=['nope'])
    with pytest.raises(ValueError, match=r"unknown dataset\(s\) \['qm10'\]"): load_stores(['qm10'])
    with pytest.raises(ValueError, match="unknown algorithm 'nope'"): explore_plan(training_sizes(('mp36k',))['mp36k'], 'nope', 16)
    with pytest.raises(FileNotFoundError, match='not found'): load_result_grid(RESULTS, sources=['missing'])
    with pytest.raises(ValueError, match='positive number'): panel_data(grid, profiles, steps=0)
