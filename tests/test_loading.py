"""Property-based tests of collation: shapes as planned, masks consistent, every graph once, for every algorithm."""
import numpy as np, torch, pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from gnnbatch_nb.graphs import GraphStore
from gnnbatch_nb.batching.registry import ALGORITHMS, make_plan
from gnnbatch_nb.loading import collate, PlanSampler, PaddedGraphs, batch_loader

def random_store(n_node, seed, stored_edges):
    "A store of random molecules: fully connected, or with random stored edges (and periodic shifts)."
    rng = np.random.default_rng(seed)
    n = np.asarray(n_node, np.int64); ptr = np.r_[0, np.cumsum(n)]
    kw = {}
    if stored_edges:
        e = rng.integers(0, 4, len(n)) * n                       # k-NN-like: a multiple of n edges per graph
        per_graph = [np.stack([rng.integers(0, max(m, 1), c), np.repeat(np.arange(m), c // max(m, 1))])
                     for m, c in zip(n, e)]
        ei = np.concatenate(per_graph, 1) if e.sum() else np.zeros((2, 0), np.int64)
        kw = dict(edge_index=ei.astype(np.int16), edge_ptr=np.r_[0, np.cumsum(e)],
                  edge_shift=rng.integers(-1, 2, (e.sum(), 3)).astype(np.int8),
                  cell=np.tile(np.eye(3, dtype=np.float32)*5, (len(n), 1, 1)))
    return GraphStore('rand', z=rng.integers(1, 10, ptr[-1]).astype(np.uint8),
                      pos=rng.normal(size=(ptr[-1], 3)).astype(np.float32),
                      node_ptr=ptr, y=rng.normal(size=(len(n), 1)), target_names=['t'], target_units=['u'], **kw)

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 12), min_size=1, max_size=120), st.sampled_from(sorted(ALGORITHMS)),
       st.sampled_from([2, 3, 5, 16]), st.integers(0, 1000), st.booleans())
def test_collated_batches_match_the_plan(n_node, algorithm, B, seed, stored):
    store = random_store(n_node, seed, stored)
    plan = make_plan(store.sizes, algorithm, B, seed=seed, on_too_big='solo') if algorithm in ('dynamic', 'packing') \
        else make_plan(store.sizes, algorithm, B, seed=seed)
    padded = plan.padded
    seen = []
    for b in range(len(plan)):
        idx = plan.batch(b)
        pb = collate(store, idx, tuple(plan.shapes[b]) if padded else None)
        N, E, G = pb.shape
        if padded: assert (N, E, G) == tuple(plan.shapes[b])
        n, e, g = pb.n_real
        assert (n, e, g) == (store.n_node[idx].sum(), store.n_edge[idx].sum(), len(idx))
        # masks are prefixes, and consistent with the node -> graph map
        assert pb.node_mask[:n].all() and not pb.node_mask[n:].any()
        assert pb.graph_mask[:g].all() and not pb.graph_mask[g:].any()
        src, dst = pb.edge_index
        # real edges join real nodes, never across graphs; padding nodes belong to the padding graph
        assert (pb.node_mask[src] == pb.edge_mask).all() and (pb.node_mask[dst] == pb.edge_mask).all()
        assert (pb.batch[src] == pb.batch[dst]).all()
        assert (pb.batch[pb.node_mask] < g).all() and (pb.batch[~pb.node_mask] == g).all()
        assert (pb.y[g:] == 0).all() and torch.allclose(pb.y[:g], torch.tensor(store.y[idx, 0], dtype=torch.float32))
        if padded: assert N - n >= 1 and G - g >= 1
        assert torch.isfinite(pb.edge_dist()).all()
        seen.append(idx)
    used = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    assert np.array_equal(np.sort(np.concatenate([used, plan.skipped, plan.dropped])), np.arange(len(store.n_node)))

def test_edge_vectors_match_single_graph_reads():
    store = random_store([3, 5, 2, 7], 0, stored_edges=True)
    pb = collate(store, [2, 0, 3], (20, 100, 4))
    off = 0; eoff = 0
    for g in [2, 0, 3]:
        d = store.graph(g); k = d['edge_index'].shape[1]
        np.testing.assert_allclose(pb.edge_vec()[eoff:eoff+k].numpy(), d['edge_vec'], atol=1e-5)
        np.testing.assert_array_equal(pb.edge_index[:, eoff:eoff+k].numpy() - off, d['edge_index'])
        off += len(d['z']); eoff += k

def test_loader_with_workers_is_deterministic_and_complete():
    store = random_store(np.random.default_rng(1).integers(1, 10, 400), 1, stored_edges=False)
    runs = []
    for _ in range(2):
        dl = batch_loader(store, 'packing', 8, seed=3, num_workers=2)
        runs.append([b.graph_index.tolist() for b in dl])
    assert runs[0] == runs[1]
    assert sorted(sum(runs[0], [])) == list(range(400))

@pytest.mark.parametrize('algorithm', sorted(ALGORITHMS))
def test_ranks_are_disjoint_with_equal_batch_counts(algorithm):
    store = random_store(np.random.default_rng(2).integers(1, 10, 301), 2, stored_edges=False)
    samplers = [PlanSampler(store.sizes, algorithm, 8, seed=5, rank=r, world_size=3) for r in range(3)]
    assert len({len(s) for s in samplers}) == 1
    sets = [set(np.concatenate([sp.index for sp in s]).tolist()) for s in samplers]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])

def test_too_big_graph_is_a_clear_error_by_default():
    store = random_store([3, 3, 40, 3], 0, stored_edges=False)
    from gnnbatch_nb.batching.packing import plan_dynamic
    with pytest.raises(ValueError, match='graph 2'):
        plan_dynamic(store.sizes, 4, budget=(32, 200, 4))

def symmetric_store(n_node, seed, periodic):
    "Random graphs whose every edge has its reverse (j -> i with the opposite image shift), in a random order."
    rng = np.random.default_rng(seed)
    n = np.asarray(n_node, np.int64); ptr = np.r_[0, np.cumsum(n)]
    eis, shifts, counts = [], [], []
    for m in n:
        k = int(rng.integers(0, 3 * m + 1))
        a, b = rng.integers(0, m, k), rng.integers(0, m, k)
        s = rng.integers(-1, 2, (k, 3)) if periodic else np.zeros((k, 3), np.int64)
        keep = (a != b) | (s != 0).any(1)                                  # no self loop without an image shift
        a, b, s = a[keep], b[keep], s[keep]
        lead = s[np.arange(len(s)), np.argmax(s != 0, axis=1)]             # a self loop's s and -s are one pair
        sign = np.where(a < b, 1, np.where(a > b, -1, np.where(lead < 0, -1, 1)))
        _, first = np.unique(np.column_stack([np.minimum(a, b), np.maximum(a, b), s * sign[:, None]]),
                             axis=0, return_index=True)               # one edge per pair: no multi-edges
        a, b, s = a[first], b[first], s[first]
        order = rng.permutation(2 * len(a))
        eis.append(np.stack([np.r_[a, b], np.r_[b, a]])[:, order]); shifts.append(np.r_[s, -s][order])
        counts.append(2 * len(a))
    kw = dict(edge_index=np.concatenate(eis, 1).astype(np.int16), edge_ptr=np.r_[0, np.cumsum(counts)])
    if periodic: kw.update(edge_shift=np.concatenate(shifts).astype(np.int8),
                           cell=np.tile(np.eye(3, dtype=np.float32) * 4, (len(n), 1, 1)))
    return GraphStore('sym', z=rng.integers(1, 10, ptr[-1]).astype(np.uint8),
                      pos=rng.normal(size=(ptr[-1], 3)).astype(np.float32), node_ptr=ptr,
                      y=rng.normal(size=(len(n), 1)), target_names=['t'], target_units=['u'], **kw)

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(1, 9), min_size=1, max_size=40), st.integers(0, 1000), st.booleans(), st.booleans())
def test_edge_pairs_join_each_edge_with_its_reverse(n_node, seed, periodic, complete):
    store = random_store(n_node, seed, False) if complete else symmetric_store(n_node, seed, periodic)
    idx = np.random.default_rng(seed).permutation(len(n_node))[:max(1, len(n_node) // 2)]
    N, E = int(store.n_node[idx].sum()) + 2, int(store.n_edge[idx].sum()) + int(seed % 5)
    pb = collate(store, idx, (N, E, len(idx) + 1))
    pair, rep, (n, e, g) = pb.edge_pair.numpy(), pb.pair_edge.numpy(), pb.n_real
    assert len(pair) == E and len(rep) == (E // 2 + 1 if E else 0) and pair.max(initial=-1) < len(rep)
    src, dst = pb.edge_index.numpy()
    shift = pb.edge_shift.numpy() if pb.edge_shift is not None else np.zeros((E, 3))
    counts = np.bincount(pair[:e], minlength=len(rep))
    assert set(counts[np.unique(pair[:e])]) <= {2}                      # every real pair: exactly two edges
    for k in range(e):                                                  # ... an edge and its reverse
        j = [l for l in np.flatnonzero(pair[:e] == pair[k]) if l != k][0]
        assert (src[j], dst[j]) == (dst[k], src[k]) and (shift[j] == -shift[k]).all()
    assert len(set(pair[e:])) <= 1 and not set(pair[e:]) & set(pair[:e])   # padding: one pair of its own
    d = pb.edge_dist()
    assert torch.allclose(d[pb.pair_edge[pb.edge_pair]], d, atol=1e-5)  # each edge reads its own length

def test_an_atom_and_its_own_periodic_images_pair_up():
    "One atom in a cell: its edges to its own images (shift s and -s) are reverses of each other."
    store = symmetric_store([1, 1], 303, True)                          # the case hypothesis found (PR of 2026-12-02)
    pb = collate(store, [0, 1])
    assert pb.edge_pair is not None and pb.n_real[1] > 0
    src, dst = pb.edge_index.numpy(); shift = pb.edge_shift.numpy(); pair = pb.edge_pair.numpy()
    for k in range(pb.n_real[1]):
        j = [l for l in np.flatnonzero(pair == pair[k]) if l != k][0]
        assert src[j] == dst[k] == src[k] and (shift[j] == -shift[k]).all()

def test_a_repeated_edge_means_no_pairs():
    "An edge stored twice (with its reverse twice) has no single reverse: the store runs per edge."
    from gnnbatch_nb.loading import edge_pairs
    g, src, dst = np.zeros(4, np.int64), np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])
    assert edge_pairs(g, src, dst) is None
    np.testing.assert_array_equal(edge_pairs(g[:2], src[:2], dst[:2]), [0, 0])

def test_stores_without_reverse_edges_get_no_pairs():
    store = random_store([4, 5, 6], 3, True)                           # random (k-NN-like) edges: not symmetric
    assert collate(store, [0, 1, 2]).edge_pair is None


def _same(a, b):
    for k, v in vars(a).items():
        w = getattr(b, k)
        if torch.is_tensor(v): assert v.dtype == w.dtype and torch.equal(v, w), k
        elif isinstance(v, dict): assert v.keys() == w.keys() and all(torch.equal(v[j], w[j]) for j in v)
        else: assert v == w, k

@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=80), st.sampled_from(['packing', 'dynamic', 'concat']),
       st.integers(1, 4), st.booleans())
def test_prefetch_gives_the_same_batches_in_order(n_node, algorithm, depth, stored):
    from gnnbatch_nb.loading import prefetch, pack_batch
    store = random_store(n_node, 0, stored)
    specs = list(PlanSampler(store.sizes, algorithm, 4, on_too_big='solo') if algorithm != 'concat'
                 else PlanSampler(store.sizes, algorithm, 4))
    ds = PaddedGraphs(store)
    got = list(prefetch(specs, ds.__getitem__, depth=depth))
    assert len(got) == len(specs)
    for spec, b in zip(specs, got):
        ref = collate(store, spec.index, spec.shape)
        _same(b, ref); _same(pack_batch(b).to('cpu'), ref)
    assert sorted(torch.cat([b.graph_index for b in got]).tolist()) == list(range(len(n_node)))

def test_prefetch_stops_cleanly_and_names_the_failing_batch():
    import itertools, threading
    from gnnbatch_nb.loading import prefetch
    before = threading.active_count()
    with prefetch(itertools.count(), lambda i: i * 2, depth=2) as it:
        assert [next(it) for _ in range(3)] == [0, 2, 4]
    assert it.thread is None and threading.active_count() == before
    def boom(i):
        if i == 3: raise ValueError('bad graph')
        return i
    it = prefetch(range(10), boom)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match='building batch 3 .* ValueError: bad graph'): next(it)
    assert threading.active_count() == before
    with pytest.raises(ValueError, match='depth must be an integer >= 1'): prefetch(range(3), depth=0)
