"""Property-based tests of the edge builders, and agreement of the periodic kNN with ASE."""
import numpy as np, torch
from hypothesis import given, settings, strategies as st
from gnnbatch_nb.graphs import complete_edge_index, knn_graph, radius_graph, GraphStore, random_split

sizes = st.lists(st.integers(0, 12), min_size=0, max_size=12)

@settings(max_examples=100, deadline=None)
@given(sizes)
def test_complete_edges_are_all_ordered_pairs_once(n):
    ei = complete_edge_index(n)
    ptr = np.r_[0, np.cumsum(n)]
    want = {(ptr[g] + j, ptr[g] + i) for g, m in enumerate(n) for i in range(m) for j in range(m) if i != j}
    got = list(map(tuple, ei.T.tolist()))
    assert len(got) == len(want) and set(got) == want
    assert (np.diff(ei[1]) >= 0).all()                              # grouped by receiver

def _brute(pos, batch, keep):
    out = set()
    for i in range(len(pos)):
        for j in range(len(pos)):
            if i != j and batch[i] == batch[j] and keep(i, j): out.add((j, i))
    return out

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=5), st.floats(0.1, 2.0), st.integers(0, 2**31 - 1))
def test_radius_graph_matches_brute_force(n, r, seed):
    rng = np.random.default_rng(seed)
    pos = torch.tensor(rng.uniform(0, 2, (sum(n), 3)), dtype=torch.float64)
    batch = torch.repeat_interleave(torch.arange(len(n)), torch.tensor(n))
    d = torch.cdist(pos, pos)
    got = set(map(tuple, radius_graph(pos, r, batch).T.tolist()))
    assert got == _brute(pos, batch, lambda i, j: d[i, j] <= r)

@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=5), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_knn_graph_takes_the_k_nearest_within_each_graph(n, k, seed):
    rng = np.random.default_rng(seed)
    pos = torch.tensor(rng.uniform(0, 2, (sum(n), 3)), dtype=torch.float64)
    batch = torch.repeat_interleave(torch.arange(len(n)), torch.tensor(n))
    ei = knn_graph(pos, k, batch)
    d = torch.cdist(pos, pos)
    assert (batch[ei[0]] == batch[ei[1]]).all() and (ei[0] != ei[1]).all()
    counts = torch.bincount(ei[1], minlength=len(pos))
    assert (counts == torch.clamp(torch.tensor(n)[batch] - 1, max=k)).all()
    for i in range(len(pos)):                                       # nobody outside is closer than the farthest kept
        nb = ei[0][ei[1] == i]
        if len(nb) == 0: continue
        others = [j for j in range(len(pos)) if j != i and batch[j] == batch[i] and j not in nb.tolist()]
        if others: assert d[i, nb].max() <= d[i, others].min() + 1e-12

@settings(max_examples=50, deadline=None)
@given(st.integers(0, 500), st.integers(0, 10))
def test_random_split_partitions(n, seed):
    sp = random_split(n, seed=seed)
    allidx = np.concatenate([sp['train'], sp['val'], sp['test']])
    assert sorted(allidx.tolist()) == list(range(n))

def test_store_rejects_nan_and_names_the_graph():
    import pytest
    pos = np.zeros((4, 3), np.float32); pos[3, 0] = np.nan
    with pytest.raises(ValueError, match='graph 1 .* atom 1'):
        GraphStore('x', np.ones(4, np.uint8), pos, np.array([0, 2, 4]), np.zeros((2, 1)), ['E'], ['eV'])

def test_periodic_knn_agrees_with_ase_on_real_crystals():
    "matscipy's neighbour list (used for speed) and ASE's give the same 12-NN graphs."
    from ase.neighborlist import neighbor_list
    from gnnbatch_nb.data.crystals import read_mp36k, record_atoms, periodic_knn
    recs = read_mp36k()
    rng = np.random.default_rng(0)
    for i in rng.choice(len(recs), 40, replace=False):
        at = record_atoms(recs[i])
        a, b = periodic_knn(at), periodic_knn(at, start=3.0, neighbour_list=neighbor_list)
        for x, y in zip(a[:2] + a[3:], b[:2] + b[3:]): np.testing.assert_array_equal(x, y)
        np.testing.assert_allclose(a[2], b[2], atol=1e-9)

def test_cached_crystal_graphs_match_a_fresh_build():
    from gnnbatch_nb.data.crystals import mp36k, read_mp36k, build_crystals, MP36K_TARGETS
    mp = mp36k(verbose=False)
    recs = read_mp36k()
    idx = [0, 1, 100, 5000, int(np.argmax(mp.n_node))]
    fresh = build_crystals([recs[i] for i in idx], MP36K_TARGETS, 'x', progress=False)
    sub = mp.subset(idx)
    for k in ('z', 'node_ptr', 'edge_index', 'edge_ptr', 'edge_shift'):
        np.testing.assert_array_equal(getattr(sub, k), getattr(fresh, k))
    np.testing.assert_allclose(sub.pos, fresh.pos, atol=1e-6)
