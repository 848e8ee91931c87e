"""Models: padding exactness (predictions and gradients) for every (model, algorithm), PaiNN's rotation invariance,
no graph breaks under torch._dynamo, and parameter counts."""
from dataclasses import replace
import numpy as np, torch, pytest
from gnnbatch_nb.data.qm9 import qm9
from gnnbatch_nb.loading import collate
from gnnbatch_nb.batching.registry import ALGORITHMS, make_plan
import math
from torch import nn
from gnnbatch_nb.models.schnet import (SchNet, unpadded_reference, check_padding_exact,
    graph_breaks, n_params, schnet_reference, GaussianRBF, RBF_FLOOR, Edges)
from gnnbatch_nb.models.mpeu import MPEU, edge_input_layer
from gnnbatch_nb.models.painn import PaiNN, random_rotation

torch.set_num_threads(1)        # shared 2-core CPU: single-threaded scatter is faster than contended threads
MODELS = {'schnet': SchNet, 'mpeu': MPEU, 'painn': PaiNN}
N_MOL = {'schnet': 40, 'mpeu': 40, 'painn': 12}   # PaiNN (F=256) costs ~20x SchNet per edge

@pytest.fixture(scope='module')
def store(): return qm9(verbose=False)

@pytest.fixture(scope='module')
def idx(store): return np.random.default_rng(123).choice(store.n_graph, 40, replace=False)

_cache = {}
def reference(name, store, idx):
    "A float64 model of kind `name` and its unpadded per-graph predictions and gradient sums (cached per module)."
    if name not in _cache:
        torch.manual_seed(0)
        model = MODELS[name]().double()
        sub = idx[:N_MOL[name]]
        _cache[name] = model, sub, unpadded_reference(model, store, sub)
    return _cache[name]

@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
@pytest.mark.parametrize('name', list(MODELS))
def test_padding_exact_predictions_and_gradients(name, algorithm, store, idx):
    model, sub, ref = reference(name, store, idx)
    plan = make_plan(store.sizes[sub], algorithm, 8)
    assert check_padding_exact(model, store, sub, plan, ref, atol=1e-9, rtol=1e-9) > 0

@pytest.mark.parametrize('name', list(MODELS))
def test_padding_exact_float32(name, store, idx):
    torch.manual_seed(1)
    model = MODELS[name]()
    sub = idx[:12]
    ref = unpadded_reference(model, store, sub, grads=False)
    check_padding_exact(model, store, sub, make_plan(store.sizes[sub], 'static-2^N', 4), ref, atol=1e-4, rtol=1e-4,
                        grads=False)

def test_padding_check_detects_a_leak(store, idx):
    class BatchCentred(SchNet):
        def forward(self, batch):
            h, e, edges = self.encode(batch); h = h - h.mean(0)
            for block in self.interactions: h = block(h, e, edges)
            return self.readout(h, batch)
    m = BatchCentred()
    with pytest.raises(AssertionError, match='differ'):
        check_padding_exact(m, store, idx[:16], make_plan(store.sizes[idx[:16]], 'static-64', 8),
                            unpadded_reference(m, store, idx[:16]))

def _padded_batch(store, idx, B=8):
    plan = make_plan(store.sizes[idx], 'static-64', B, seed=0)
    return collate(store, idx[plan.batch(0)], tuple(plan.shapes[0]))

@pytest.mark.parametrize('name', list(MODELS))
def test_no_graph_breaks(name, store, idx):
    pb = _padded_batch(store, idx)
    assert (~pb.edge_mask).any()                     # the batch really has padding edges
    assert graph_breaks(MODELS[name](), pb) == (1, 0)

def test_parameter_counts():
    assert n_params(SchNet()) == 80_352
    assert n_params(MPEU()) == 173_152
    assert n_params(PaiNN()) == 2_251_521

def test_painn_rotation_invariance_and_finite_forces(store, idx):
    torch.manual_seed(0)
    model = PaiNN().double()
    pb = _padded_batch(store, idx)
    pb = replace(pb, pos=pb.pos.double())
    R = random_rotation(7, torch.float64)
    with torch.no_grad():
        e0, e1 = model(pb), model(replace(pb, pos=pb.pos @ R.T))
        (s0, v0), (s1, v1) = model.features(pb), model.features(replace(pb, pos=pb.pos @ R.T))
    assert torch.allclose(e0, e1, atol=1e-9)
    assert torch.allclose(s0, s1, atol=1e-8)
    assert torch.allclose(v1, torch.einsum('ij,njf->nif', R, v0), atol=1e-8)
    pos = pb.pos.clone().requires_grad_()
    model(replace(pb, pos=pos)).sum().backward()
    assert torch.isfinite(pos.grad).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())

def test_unknown_species_fails(store, idx):
    pb = _padded_batch(store, idx)
    with pytest.raises(IndexError):
        SchNet()(replace(pb, z=torch.where(pb.node_mask, torch.full_like(pb.z, 2), pb.z)))   # helium

@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_schnet_equals_its_plain_reference(dtype, tol, store, idx):
    "The fast path (clamped exp, folded ssp shifts, unmasked messages) against the plain one, on a padded batch."
    torch.manual_seed(2)
    model = SchNet().to(dtype)
    pb = _padded_batch(store, idx)
    pb = replace(pb, pos=pb.pos.to(dtype))
    fast, plain = model(pb), schnet_reference(model, pb)
    assert (fast - plain).abs().max() < tol
    g_fast = torch.autograd.grad(fast.sum(), list(model.parameters()))
    g_plain = torch.autograd.grad(plain.sum(), list(model.parameters()))
    assert all((a - b).abs().max() < tol*max(1.0, b.abs().max()) for a, b in zip(g_fast, g_plain))

def test_rbf_clamp_deviation_is_below_exp_floor():
    d = torch.linspace(0, 20, 2001, dtype=torch.float64)
    gap = (GaussianRBF()(d) - GaussianRBF(floor=None)(d)).abs().max().item()
    assert 0 < gap <= math.exp(RBF_FLOOR)

@pytest.mark.parametrize('name', list(MODELS))
def test_float32_gradients_close_to_float64(name, store, idx):
    "The float32 deviation of the fast paths: every gradient within 5e-4 of float64 (relative to its largest entry)."
    torch.manual_seed(5)
    m32 = MODELS[name](); m64 = MODELS[name]().double(); m64.load_state_dict(m32.state_dict())
    pb = _padded_batch(store, idx)
    pb64 = replace(pb, pos=pb.pos.double())
    g32 = torch.autograd.grad(((m32(pb) - 1)**2)[pb.graph_mask].sum(), list(m32.parameters()))
    g64 = torch.autograd.grad(((m64(pb64) - 1)**2)[pb.graph_mask].sum(), list(m64.parameters()))
    for (n, _), a, b in zip(m32.named_parameters(), g32, g64):
        assert (a.double() - b).abs().max() <= 5e-4 * b.abs().max(), n

def test_edge_input_layer_equals_concatenation():
    torch.manual_seed(4)
    lin, h, e = nn.Linear(11, 8, bias=True).double(), torch.randn(5, 4).double(), torch.randn(6, 3).double()
    ed = Edges(torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([1, 0, 3, 2, 0, 4]), torch.ones(5))
    assert torch.allclose(edge_input_layer(lin, h, e, ed), lin(torch.cat([h[ed.src], h[ed.dst], e], -1)), atol=1e-12)

@pytest.mark.parametrize('name', ['schnet', 'mpeu', 'painn'])
def test_one_filter_per_edge_pair_equals_one_per_edge(name, store, idx):
    "The models' per-pair filters (edge_pair) give the per-edge result, predictions and gradients, in float64."
    import copy
    from gnnbatch_nb.loading import collate
    torch.manual_seed(0); net = {"schnet": SchNet, "mpeu": MPEU, "painn": PaiNN}[name]().double()
    pb = collate(store, idx[:12], (int(store.n_node[idx[:12]].sum()) + 3, int(store.n_edge[idx[:12]].sum()) + 7, 14))
    pb.pos = pb.pos.double()
    assert pb.edge_pair is not None
    flat = copy.copy(pb); flat.edge_pair = flat.pair_edge = None
    out = []
    for b in (pb, flat):
        net.zero_grad(); p = net(b); (p**2).sum().backward()
        out.append((p.detach(), [q.grad.clone() for q in net.parameters()]))
    assert torch.allclose(out[0][0], out[1][0], atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(out[0][1], out[1][1]))
