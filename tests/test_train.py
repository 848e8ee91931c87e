"""Training: exact resume, evaluation independent of the batching, bad targets rejected."""
import numpy as np, torch, pytest
from dataclasses import replace
torch.set_num_threads(1)
from gnnbatch_nb.data.qm9 import qm9
from gnnbatch_nb.graphs import random_split
from gnnbatch_nb.loading import collate
from gnnbatch_nb.training.train import Trainer, TrainConfig, resume, staircase
from gnnbatch_nb.models.registry import masked_mse

@pytest.fixture(scope='module')
def small():
    return qm9(verbose=False).subset(np.arange(300))

@pytest.mark.parametrize('algorithm', ['static-64', 'bucketing'])
def test_resume_is_bit_identical(small, algorithm, tmp_path):
    cfg = TrainConfig(batch_size=8, algorithm=algorithm, seed=3)
    a = Trainer(small, cfg); a.fit(40, progress=False)          # crosses an epoch (240 training graphs / 7 per batch)
    b = Trainer(small, cfg); b.fit(23, progress=False)
    c = resume(small, b.save(tmp_path/'ck.pt')); c.fit(17, progress=False)
    assert a.epoch >= 1
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), c.model.parameters()))
    assert a.losses == c.losses

def test_evaluation_does_not_depend_on_the_batching(small):
    t = Trainer(small, TrainConfig(batch_size=8)); t.fit(5, progress=False)
    m = {}
    for alg in ('dynamic', 'static-64', 'concat', 'static-2^N'):
        t.cfg = replace(t.cfg, eval_algorithm=alg)
        m[alg] = t.evaluate('val')
    maes = [v['mae'] for v in m.values()]
    assert max(maes) - min(maes) < 1e-5 * max(maes)
    assert len({v['n'] for v in m.values()}) == 1 and m['dynamic']['n'] == 30

def test_masked_mse_ignores_padding_slots(small):
    b = collate(small, [0, 1, 2], (100, 1000, 8), 'U0_atom')
    pred = torch.zeros(8); pred[3:] = 1e6                        # garbage in the padding slots
    ref = ((0 - (b.y[:3] - 1.0) / 2.0)**2).mean()
    assert torch.allclose(masked_mse(pred, b, 1.0, 2.0), ref)

def test_nan_targets_are_rejected(small):
    s = small.subset(np.arange(50)); s.y = s.y.copy(); s.y[random_split(50, seed=0)['train'][0], -1] = np.nan
    with pytest.raises(ValueError, match='NaN'):
        Trainer(s, TrainConfig(batch_size=8, split_seed=0))

def test_staircase():
    assert staircase(199_999) == 0.96 and staircase(200_000) == 0.96**2
