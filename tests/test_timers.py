"""Tests of `gnnbatch_nb.timers`: StepTimer arithmetic, compile counts per distinct shape, restored Dynamo settings."""
import time
import numpy as np, pytest, torch
import torch._dynamo
from gnnbatch_nb.training.timers import (StepTimer, compile_model, CompileCounter, count_compiles,
    distinct_shape_batches, time_training_steps, static_config, sync)
from gnnbatch_nb.models.registry import masked_mse
from gnnbatch_nb.data.qm9 import qm9
from gnnbatch_nb.loading import batch_loader, collate
from gnnbatch_nb.models.schnet import SchNet

torch.set_num_threads(1)

class FakeClock:
    "Advances by the next of `ticks` at each reading."
    def __init__(self, ticks): self.ticks, self.t, self.i = ticks, 0.0, 0
    def __call__(self):
        self.t += self.ticks[self.i % len(self.ticks)]; self.i += 1
        return self.t

def test_step_timer_fake_clock():
    # readings per step: t0 (fetch start), t1 (fetch end), t2 (done); batching = t1-t0, update = t2-t0
    b_times, u_extra = [1.0, 2.0, 3.0, 10.0], [0.5, 0.5, 4.0, 1.0]
    ticks = [x for b, u in zip(b_times, u_extra) for x in (0.25, b, u)]
    t = StepTimer(clock=FakeClock(ticks)); it = iter(range(10))
    for _ in b_times: t.fetch(it); t.done()
    s = t.summary()
    upd = np.add(b_times, u_extra)
    assert s['steps'] == 4
    assert np.isclose(s['batching_median'], np.median(b_times)) and np.isclose(s['batching_mean'], np.mean(b_times))
    assert np.isclose(s['update_median'], np.median(upd)) and np.isclose(s['update_mean'], np.mean(upd))
    assert s['combined_mean'] == s['update_mean'] and s['combined_median'] == s['update_median']
    assert np.isclose(s['pure_update_mean'], np.mean(u_extra)) and np.isclose(s['first_step'], upd[0])
    assert all(u >= b for u, b in zip(t.update, t.batching))

def test_step_timer_sleep_and_errors():
    def gen():
        while True: time.sleep(0.002); yield torch.zeros(2)
    t = StepTimer('cpu'); it = gen()
    for _ in range(3): t.fetch(it); time.sleep(0.004); t.done()
    s = t.summary()
    assert s['combined_median'] >= s['batching_median'] >= 0.002
    assert s['pure_update_median'] >= 0.004
    with pytest.raises(ValueError): StepTimer().summary()
    with pytest.raises(RuntimeError): StepTimer().done()
    sync('cpu')

@pytest.fixture(scope='module')
def store(): return qm9(verbose=False)

def test_static_compiles_once_per_shape(store):
    model = SchNet(n_feat=16, n_steps=1)
    three = distinct_shape_batches(batch_loader(store, 'static-64', 32, target='U0_atom'), 3)
    assert len({b.shape for b in three}) == 3
    r = count_compiles(model, three + three[:1], 'compiled', backend='eager')   # a repeated shape does not recompile
    assert r['graphs'] == 3 and r['frames_ok'] == 3 and r['compile_s'] > 0
    one = distinct_shape_batches(batch_loader(store, 'dynamic', 32, target='U0_atom'), 3, distinct=False)
    assert len({b.shape for b in one}) == 1
    assert count_compiles(model, one, 'compiled', backend='eager')['graphs'] == 1
    assert count_compiles(model, three, 'compiled-dynamic', backend='eager')['graphs'] < 3

def test_compile_model_restores_config():
    c = torch._dynamo.config
    before = (c.automatic_dynamic_shapes, c.recompile_limit, c.accumulated_recompile_limit)
    m = torch.nn.Linear(3, 1)
    with compile_model(m, 'compiled', backend='eager', recompile_limit=500) as cm:
        assert (c.automatic_dynamic_shapes, c.recompile_limit) == (False, 500)
        assert c.accumulated_recompile_limit >= 500
        with CompileCounter() as cc:
            cm(torch.ones(2, 3)); cm(torch.ones(4, 3))
        assert cc.final['graphs'] == 2
    assert (c.automatic_dynamic_shapes, c.recompile_limit, c.accumulated_recompile_limit) == before
    with pytest.raises(ValueError, match='CUDA'):
        with compile_model(m, 'cudagraphs'): pass
    assert (c.automatic_dynamic_shapes, c.recompile_limit) == before[:2]
    assert set(static_config(7)) >= {'automatic_dynamic_shapes', 'recompile_limit'}

def test_masked_mse_and_training_steps(store):
    b = collate(store, [0, 1], (64, 64, 4))
    pred = torch.cat([(b.y[:2] - 2.0) / 3.0 + torch.tensor([2.0, 0.0]), torch.tensor([5.0, 5.0])])
    assert torch.isclose(masked_mse(pred, b, 2.0, 3.0), torch.tensor(2.0))
    with pytest.raises(ValueError): masked_mse(pred[:3], b)
    torch.manual_seed(0)
    model = SchNet(n_feat=16, n_steps=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = batch_loader(store, 'dynamic', 8, indices=np.arange(40), target='U0_atom')
    y = store.target('U0_atom')[:40]
    loss = lambda p, bb: masked_mse(p, bb, float(y.mean()), float(y.std()))
    r = time_training_steps(model, loader, opt, loss, steps=8, warmup=1)   # more steps than one epoch: restarts
    assert r['steps'] == 8 and r['compiles'] == 0
    assert r['combined_mean'] >= r['batching_mean'] > 0
    with compile_model(model, 'compiled', backend='eager') as cm:
        r = time_training_steps(cm, loader, opt, loss, steps=3)
    assert r['compiles'] >= 1
