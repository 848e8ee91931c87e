"""Property tests of the batch planners (gnnbatch_nb.plan, .padding, .bucketing, .packing).

Every planner, on random size distributions: every graph exactly once per epoch (or the documented
quirk), no budget exceeded, shapes as planned, the padding rule, determinism in (seed, epoch),
a new order in a new epoch, disjoint equal-length shards; the over-budget policies; and dynamic
batching against a literal copy of jraph's `dynamically_batch` loop.
"""
import numpy as np
import pytest
from hypothesis import given, settings, assume, strategies as st

from gnnbatch_nb.sizes import GraphSizes
from gnnbatch_nb.batching.plan import (Plan, next_multiple_64, ceil_multiple_64, next_pow2,
    epoch_order, shard_plan, check_too_big, solo_shape)
from gnnbatch_nb.batching.padding import plan_static
from gnnbatch_nb.batching.bucketing import plan_bucketing
from gnnbatch_nb.batching.registry import ALGORITHMS, make_plan
from gnnbatch_nb.batching.packing import (estimate_budget, dynamic_batch_stream,
    plan_dynamic, plan_packing, next_fit_ptr)

SETTINGS = settings(max_examples=50, deadline=None)


# ---------------------------------------------------------------- strategies

@st.composite
def graph_sizes(draw, min_size=0, max_size=120):
    "Random size distributions: free (nodes and edges independent), fully connected or kNN."
    kind = draw(st.sampled_from(['free', 'complete', 'knn']))
    n = draw(st.lists(st.integers(0 if kind == 'free' else 1, 30), min_size=min_size, max_size=max_size))
    if kind == 'free':
        e = draw(st.lists(st.integers(0, 300), min_size=len(n), max_size=len(n)))
        return GraphSizes(n, e)
    if kind == 'complete': return GraphSizes.complete(n)
    return GraphSizes.knn(n, draw(st.integers(1, 12)))


# ---------------------------------------------------------------- the jraph oracle

def jraph_dynamically_batch(graphs, n_node, n_edge, n_graph):
    """A literal copy of `jraph.dynamically_batch` (jraph/_src/utils.py) on (index, nodes, edges) triples.

    Yields lists of indices instead of padded GraphsTuples; the control flow is jraph's, line by line."""
    if n_graph < 2:
        raise ValueError('The number of graphs in a batch size must be greater or '
                         f'equal to `2` for padding with graphs, got {n_graph}.')
    valid_batch_size = (n_node - 1, n_edge, n_graph - 1)
    accumulated_graphs = []
    num_accumulated_nodes = 0
    num_accumulated_edges = 0
    num_accumulated_graphs = 0
    for idx, element_nodes, element_edges in graphs:
        element_graphs = 1
        if any(x > y for x, y in zip((element_nodes, element_edges, element_graphs), valid_batch_size)):
            if accumulated_graphs:
                yield accumulated_graphs
            raise RuntimeError('Found graph bigger than batch size.')
        if not accumulated_graphs:
            accumulated_graphs = [idx]
            num_accumulated_nodes = element_nodes
            num_accumulated_edges = element_edges
            num_accumulated_graphs = element_graphs
            continue
        else:
            if ((num_accumulated_graphs + element_graphs > n_graph - 1) or
                    (num_accumulated_nodes + element_nodes > n_node - 1) or
                    (num_accumulated_edges + element_edges > n_edge)):
                yield accumulated_graphs
                accumulated_graphs = [idx]
                num_accumulated_nodes = element_nodes
                num_accumulated_edges = element_edges
                num_accumulated_graphs = element_graphs
            else:
                accumulated_graphs.append(idx)
                num_accumulated_nodes += element_nodes
                num_accumulated_edges += element_edges
                num_accumulated_graphs += element_graphs
    if accumulated_graphs:
        yield accumulated_graphs


def run_batcher(gen):
    "All batches a generator yields, and whether it raised RuntimeError at the end."
    out = []
    try:
        for b in gen: out.append([int(i) for i in b])
    except RuntimeError:
        return out, True
    return out, False


def study_static_batch(stream, B):
    "The study's DataReader.static_batch accumulation loop (drops the graph that arrives when full)."
    acc = []
    for g in stream:
        if len(acc) == B - 1:
            yield acc
            acc = []
        else:
            acc.append(g)


# ---------------------------------------------------------------- budget arithmetic

def test_budget_arithmetic_hand_cases():
    assert [next_multiple_64(v) for v in (0, 160, 191, 192)] == [64, 192, 192, 256]
    assert [ceil_multiple_64(v) for v in (0, 64, 65)] == [64, 64, 128]
    assert [next_pow2(v) for v in (0, 1, 2, 3, 1025)] == [2, 2, 2, 4, 2048]
    assert estimate_budget(GraphSizes(np.full(50, 5), np.full(50, 6)), 32) == (192, 256, 32)
    with pytest.raises(ValueError, match='batch_size must be an integer >= 2'): estimate_budget(GraphSizes([5], [6]), 1)


@SETTINGS
@given(st.lists(st.integers(0, 10**7), min_size=1, max_size=50))
def test_budget_arithmetic_properties(vs):
    v = np.array(vs)
    nm, cm, p2 = next_multiple_64(v), ceil_multiple_64(v), next_pow2(v)
    assert (nm > v).all() and (nm % 64 == 0).all() and (nm - 64 <= v).all()
    assert (cm >= np.maximum(v, 64)).all() and (cm % 64 == 0).all() and ((cm - 64 < v) | (cm == 64)).all()
    assert (p2 >= np.maximum(v, 2)).all() and ((p2 & (p2 - 1)) == 0).all() and ((p2 // 2 < v) | (p2 == 2)).all()
    assert [next_multiple_64(int(x)) for x in v] == list(nm)


@SETTINGS
@given(graph_sizes(min_size=1), st.integers(2, 64), st.integers(1, 200))
def test_estimate_budget_matches_study_formula(sizes, B, n_est):
    s = min(n_est, len(sizes))
    nn, ne = sizes.n_node[:s].tolist(), sizes.n_edge[:s].tolist()
    study = lambda vals: 64 * (1 + int(max(sum(vals) / len(vals) * B, max(vals)) // 64))
    assert estimate_budget(sizes, B, n_est) == (study(nn), study(ne), B)


# ---------------------------------------------------------------- every planner

VARIANTS = {name: (name, {}) for name in ALGORITHMS}
VARIANTS['bucketing-megabatch'] = ('bucketing', dict(group='megabatch', mega_batch=3))
VARIANTS['bucketing-K1'] = ('bucketing', dict(n_buckets=1))
VARIANTS['packing-estimate'] = ('packing', dict(budget='estimate', on_too_big='solo'))
VARIANTS['packing-average'] = ('packing', dict(graph_count='average'))
VARIANTS['dynamic-solo'] = ('dynamic', dict(n_estimation_graphs=5, on_too_big='solo'))


def check_shapes_as_planned(name, kw, plan, sizes, B):
    real, sh = plan.real, plan.shapes
    if name == 'concat':
        assert (sh == real).all()
        assert (real[:-1, 2] == B).all() and (real[:, 2] <= B).all()
        return
    if name.startswith('static'):
        assert (sh[:, 2] == B).all() and (real[:, 2] <= B - 1).all()
        if not kw.get('drop_every_bth'): assert (real[:-1, 2] == B - 1).all()
    if name == 'static-2^N':
        assert (sh[:, 0] == next_pow2(real[:, 0] + 1)).all() and (sh[:, 1] == next_pow2(real[:, 1])).all()
    elif name == 'static-64':
        assert (sh[:, 0] == ceil_multiple_64(real[:, 0] + 1)).all() and (sh[:, 1] == ceil_multiple_64(real[:, 1])).all()
    elif name == 'static-constant' and len(sizes):
        want = (next_multiple_64(int(sizes.n_node.max()) * B) + 1, next_multiple_64(int(sizes.n_edge.max()) * B), B)
        assert (sh == np.array(want)).all()
    elif name == 'bucketing':
        levels = np.array(plan.levels)
        assert len(plan.distinct_shapes) <= plan.extras['n_buckets']
        assert all(tuple(s) in set(map(tuple, levels)) for s in sh)
        idx = [next(i for i, l in enumerate(map(tuple, levels)) if tuple(s) == l) for s in sh]
        for b, i in enumerate(idx):        # the smallest level that fits (levels are in increasing order)
            for l in levels[:i]:
                assert real[b, 0] > l[0] - 1 or real[b, 1] > l[1] or real[b, 2] > l[2] - 1
        assert (real[:, 2] <= B - 1).all()
    elif name in ('dynamic', 'packing'):
        budget = np.array(plan.budget)
        solo = (sh != budget).any(1)
        assert (real[solo, 2] == 1).all()
        if plan.solo_shape is not None: assert (sh[solo] == np.array(plan.solo_shape)).all()
        assert (real[~solo] <= budget - np.array([1, 0, 1])).all()
        if name == 'packing' and kw.get('graph_count') == 'average':    # B graphs on average under one shape
            assert not solo.any() and plan.extras['n_evicted'] == 0 and len(plan.distinct_shapes) <= 1
            assert len(plan) == -(-len(sizes) // B) and plan.budget[2] == real[:, 2].max(initial=1) + 1
            assert plan.budget[:2] == (real[:, 0].max(initial=1) + 1, real[:, 1].max(initial=0))
        elif name == 'packing' and kw.get('budget') is None:
            assert not solo.any() and (real[:, 2] <= B - 1).all() and plan.extras['n_evicted'] == 0


@pytest.mark.parametrize('variant', list(VARIANTS))
@SETTINGS
@given(sizes=graph_sizes(), B=st.integers(2, 40), seed=st.integers(0, 1000), epoch=st.integers(0, 1000))
def test_planner_invariants(variant, sizes, B, seed, epoch):
    name, kw = VARIANTS[variant]
    plan = make_plan(sizes, name, B, seed=seed, epoch=epoch, **kw).validate()
    n = len(sizes)
    # every graph exactly once per epoch
    assert len(plan.dropped) == 0 and len(plan.trimmed) == 0
    if kw.get('on_too_big') != 'skip': assert len(plan.skipped) == 0
    assert sorted(plan.order.tolist()) == list(range(n))
    # shapes as planned, padding rule (validate), budget respected
    check_shapes_as_planned(name, kw, plan, sizes, B)
    # same seed and epoch: same batches
    again = make_plan(sizes, name, B, seed=seed, epoch=epoch, **kw)
    assert (again.order == plan.order).all() and (again.ptr == plan.ptr).all() and (again.shapes == plan.shapes).all()
    # another epoch: another order (for enough graphs). Packing and megabatch sorting fix the size order, so only
    # the order within size classes and the batch order move: ask for enough batches to make a repeat impossible
    if n >= 10 and ((name != 'packing' and kw.get('group') != 'megabatch') or len(plan) >= 8):
        other = make_plan(sizes, name, B, seed=seed, epoch=epoch + 1, **kw)
        assert (other.order != plan.order).any()
        assert sorted(other.order.tolist()) == list(range(n))


@pytest.mark.parametrize('variant', ['concat', 'static-64', 'bucketing', 'dynamic', 'packing'])
@SETTINGS
@given(sizes=graph_sizes(), B=st.integers(2, 40), epoch=st.integers(0, 100))
def test_no_shuffle_is_epoch_independent(variant, sizes, B, epoch):
    name, kw = VARIANTS[variant]
    a = make_plan(sizes, name, B, epoch=epoch, shuffle=False, **kw)
    b = make_plan(sizes, name, B, epoch=epoch + 1, shuffle=False, **kw)
    assert (a.order == b.order).all() and (a.ptr == b.ptr).all()


@pytest.mark.parametrize('pad', ['static-2^N', 'static-64', 'static-constant'])
@SETTINGS
@given(n=st.integers(0, 150), B=st.integers(2, 20), seed=st.integers(0, 100), shuffle=st.booleans())
def test_static_drop_every_bth_reproduces_the_study(pad, n, B, seed, shuffle):
    sizes = GraphSizes.complete(np.random.default_rng(n).integers(1, 30, n))
    plan = plan_static(sizes, B, pad=pad, seed=seed, shuffle=shuffle, drop_every_bth=True).validate()
    stream = epoch_order(n, seed, 0, shuffle).tolist()
    assert [list(map(int, b)) for b in plan] == list(study_static_batch(stream, B))
    assert sorted(plan.order.tolist() + plan.dropped.tolist()) == list(range(n))
    assert len(plan) == n // B and (plan.n_graph_real == B - 1).all()
    check_shapes_as_planned(pad, dict(drop_every_bth=True), plan, sizes, B)


# ---------------------------------------------------------------- sharding

@pytest.mark.parametrize('variant', ['static-2^N', 'bucketing', 'dynamic', 'packing'])
@SETTINGS
@given(sizes=graph_sizes(), B=st.integers(2, 20), W=st.integers(1, 5), seed=st.integers(0, 100))
def test_shards_disjoint_equal_counts(variant, sizes, B, W, seed):
    name, kw = VARIANTS[variant]
    plan = make_plan(sizes, name, B, seed=seed, **kw)
    shards = [shard_plan(plan, r, W).validate() for r in range(W)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(plan) // W
    used = np.concatenate([s.order for s in shards])
    assert len(np.unique(used)) == len(used)                                   # disjoint
    trimmed = shards[0].trimmed
    assert all((s.trimmed == trimmed).all() for s in shards)
    assert sorted(used.tolist() + trimmed.tolist()) == sorted(plan.order.tolist())
    assert sum(len(s) for s in shards) + (len(plan) % W) == len(plan)
    for s in shards: assert s.world_size == W and all(tuple(x) in set(map(tuple, plan.shapes)) for x in s.shapes)


# ---------------------------------------------------------------- jraph equality

@SETTINGS
@given(sizes=graph_sizes(), N=st.integers(1, 80), E=st.integers(0, 600), G=st.integers(2, 12), seed=st.integers(0, 100))
def test_dynamic_batch_stream_equals_jraph(sizes, N, E, G, seed):
    order = epoch_order(len(sizes), seed, 0)
    triples = [(int(g), int(sizes.n_node[g]), int(sizes.n_edge[g])) for g in order]
    want = run_batcher(jraph_dynamically_batch(triples, N, E, G))
    got = run_batcher(dynamic_batch_stream(sizes.n_node, sizes.n_edge, order, (N, E, G)))
    assert got == want


def test_dynamic_batch_stream_rejects_one_graph_slot():
    with pytest.raises(ValueError, match='greater or equal to `2`'):
        next(dynamic_batch_stream([1], [0], [0], (10, 10, 1)))
    with pytest.raises(ValueError, match='greater or equal to `2`'):
        next(jraph_dynamically_batch([(0, 1, 0)], 10, 10, 1))


@SETTINGS
@given(sizes=graph_sizes(), B=st.integers(2, 40), seed=st.integers(0, 100), epoch=st.integers(0, 100))
def test_plan_dynamic_equals_jraph(sizes, B, seed, epoch):
    plan = plan_dynamic(sizes, B, seed=seed, epoch=epoch)
    N, E, G = plan.budget
    if len(sizes): assert (N, E, G) == estimate_budget(sizes, B)
    triples = [(int(g), int(sizes.n_node[g]), int(sizes.n_edge[g])) for g in epoch_order(len(sizes), seed, epoch)]
    want, raised = run_batcher(jraph_dynamically_batch(triples, N, E, G))
    assert not raised
    assert [list(map(int, b)) for b in plan] == want


@SETTINGS
@given(sizes=graph_sizes(), N=st.integers(2, 80), E=st.integers(0, 600), G=st.integers(2, 12), seed=st.integers(0, 100))
def test_plan_dynamic_solo_equals_jraph_on_segments(sizes, N, E, G, seed):
    "With 'solo', a too-big graph closes the batch before it and goes alone: jraph on the pieces between them."
    plan = plan_dynamic(sizes, G, budget=(N, E, G), on_too_big='solo', seed=seed).validate()
    big = set(np.flatnonzero((sizes.n_node > N - 1) | (sizes.n_edge > E)).tolist())
    want, seg = [], []
    for g in epoch_order(len(sizes), seed, 0).tolist():
        if g in big:
            want += run_batcher(jraph_dynamically_batch(seg, N, E, G))[0] + [[g]]; seg = []
        else: seg.append((g, int(sizes.n_node[g]), int(sizes.n_edge[g])))
    want += run_batcher(jraph_dynamically_batch(seg, N, E, G))[0]
    assert [list(map(int, b)) for b in plan] == want


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 40)), max_size=300),
       st.integers(9, 40), st.integers(40, 200), st.integers(1, 8))
def test_next_fit_ptr_equals_jraph(graphs, cap_n, cap_e, cap_g):
    n = np.array([g[0] for g in graphs], dtype=np.int64); e = np.array([g[1] for g in graphs], dtype=np.int64)
    ptr = next_fit_ptr(n, e, cap_n, cap_e, cap_g)
    stream = [(i, a, b) for i, (a, b) in enumerate(graphs)]
    want, _ = run_batcher(jraph_dynamically_batch(stream, cap_n + 1, cap_e, cap_g + 1))
    assert [list(range(ptr[b], ptr[b + 1])) for b in range(len(ptr) - 1)] == want


# ---------------------------------------------------------------- over-budget policies

BUDGETED = {'dynamic': plan_dynamic, 'packing': plan_packing}


@pytest.mark.parametrize('name', list(BUDGETED))
@SETTINGS
@given(sizes=graph_sizes(min_size=1), N=st.integers(2, 60), E=st.integers(0, 500), G=st.integers(2, 10),
       seed=st.integers(0, 100))
def test_over_budget_policies(name, sizes, N, E, G, seed):
    fn, budget = BUDGETED[name], (N, E, G)
    big = np.flatnonzero((sizes.n_node > N - 1) | (sizes.n_edge > E))
    if len(big):
        g = int(big[0])
        msg = f"graph {g} has {sizes.n_node[g]} nodes and {sizes.n_edge[g]} edges"
        with pytest.raises(ValueError, match=msg) as exc:
            fn(sizes, G, budget=budget, seed=seed)
        err = str(exc.value)
        assert str(budget) in err and "on_too_big='skip'" in err and 'Raise the budget' in err
    else:
        fn(sizes, G, budget=budget, seed=seed).validate()
    if len(sizes) and len(big) == len(sizes):          # skipping every graph would plan no batch: an error
        with pytest.raises(ValueError, match=f"every one of the {len(sizes)} graphs is too big"):
            fn(sizes, G, budget=budget, on_too_big='skip', seed=seed)
        return
    skip = fn(sizes, G, budget=budget, on_too_big='skip', seed=seed).validate()
    assert (skip.skipped == big).all() and not np.isin(big, skip.order).any()
    assert sorted(skip.order.tolist() + skip.skipped.tolist()) == list(range(len(sizes)))
    assert (skip.shapes == np.array(budget)).all()
    solo = fn(sizes, G, budget=budget, on_too_big='solo', seed=seed).validate()
    assert sorted(solo.order.tolist()) == list(range(len(sizes))) and len(solo.skipped) == 0
    assert len(solo.distinct_shapes) <= 2
    for g in big.tolist():
        b = int(np.searchsorted(solo.ptr, np.flatnonzero(solo.order == g)[0], side='right') - 1)
        assert solo.batch(b).tolist() == [g] and tuple(solo.shapes[b]) == solo_shape(sizes, big)


def test_pyg_duplicate_case_is_not_duplicated():
    "PyG's DynamicBatchSampler with skip_too_big=True emits graph 2 twice on these sizes (anchors B2)."
    sizes = GraphSizes([400] + list(range(100, 110)), [0] * 11)
    plan = plan_dynamic(sizes, 64, budget=(301, 0, 64), on_too_big='skip', shuffle=False).validate()
    assert plan.skipped.tolist() == [0]
    assert sorted(plan.order.tolist()) == list(range(1, 11))
    assert [b.tolist() for b in plan][:2] == [[1, 2], [3, 4]]


def test_policy_name_checked():
    with pytest.raises(ValueError, match='on_too_big must be one of'):
        plan_dynamic(GraphSizes([3], [6]), 4, on_too_big='drop')


# ---------------------------------------------------------------- packing with explicit budgets

@SETTINGS
@given(sizes=graph_sizes(), N=st.integers(2, 200), E=st.integers(0, 2000), G=st.integers(2, 20),
       seed=st.integers(0, 100))
def test_packing_explicit_budget_never_overflows(sizes, N, E, G, seed):
    if len(sizes) and ((sizes.n_node > N - 1) | (sizes.n_edge > E)).all():
        with pytest.raises(ValueError, match='skipping them all'):
            plan_packing(sizes, G, budget=(N, E, G), on_too_big='skip', seed=seed)
        return
    plan = plan_packing(sizes, G, budget=(N, E, G), on_too_big='skip', seed=seed).validate()
    assert (plan.shapes == np.array([N, E, G])).all()
    assert sorted(plan.order.tolist() + plan.skipped.tolist()) == list(range(len(sizes)))


@SETTINGS
@given(sizes=graph_sizes(min_size=1), B=st.integers(2, 40), epoch=st.integers(0, 100))
def test_packing_budget_is_epoch_independent(sizes, B, epoch):
    a, b = plan_packing(sizes, B, epoch=epoch), plan_packing(sizes, B, epoch=epoch + 1)
    assert a.budget == b.budget
    assert len(a) == len(b) == -(-len(sizes) // (B - 1))


# ---------------------------------------------------------------- bucketing

@SETTINGS
@given(sizes=graph_sizes(min_size=1), B=st.integers(2, 40), K=st.integers(1, 6), epoch=st.integers(0, 100))
def test_bucketing_levels_fixed_across_epochs(sizes, B, K, epoch):
    a, b = plan_bucketing(sizes, B, n_buckets=K, epoch=epoch), plan_bucketing(sizes, B, n_buckets=K, epoch=epoch + 1)
    assert a.levels == b.levels and len(a.levels) <= K
    shapes = set(map(tuple, a.levels))
    assert set(map(tuple, a.distinct_shapes)) <= shapes and set(map(tuple, b.distinct_shapes)) <= shapes


# ---------------------------------------------------------------- validate catches what it must

def test_validate_catches_duplicates_and_losses():
    sizes = GraphSizes.complete([3, 4, 5])
    with pytest.raises(ValueError, match='graph 1 is used 2 times'):
        Plan([0, 1, 1, 2], [0, 2, 4], [[20, 40, 4]] * 2, sizes).validate()
    with pytest.raises(ValueError, match='graph 2 is in no batch'):
        Plan([0, 1], [0, 2], [[20, 40, 4]], sizes).validate()
    with pytest.raises(ValueError, match='one padding node'):
        Plan([0, 1, 2], [0, 3], [[12, 40, 4]], sizes).validate()


@pytest.mark.parametrize('name', sorted(ALGORITHMS))
def test_plans_record_their_parameters_in_fields(name):
    "Each planner fills the explicit fields that later stages read; there is no loose parameter dict."
    sizes = GraphSizes.complete(np.random.default_rng(5).integers(3, 20, 200))
    plan = make_plan(sizes, name, 8, seed=4, epoch=2).validate()
    assert (plan.batch_size, plan.seed, plan.epoch, plan.shuffle) == (8, 4, 2, True)
    assert plan.padded == (name != 'concat') and not hasattr(plan, 'params')
    assert (plan.budget is not None) == (name in ('dynamic', 'packing'))
    if plan.budget is not None: assert {tuple(s) for s in plan.shapes} == {tuple(plan.budget)}
    assert (plan.levels is not None) == (name in ('static-constant', 'bucketing'))
    if plan.levels is not None: assert {tuple(s) for s in plan.shapes} <= set(plan.levels)
    shard = shard_plan(plan, 1, 3)
    assert (shard.rank, shard.world_size, shard.budget, shard.levels, shard.seed) == (1, 3, plan.budget, plan.levels, 4)
