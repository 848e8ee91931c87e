"""Training on several processes (gloo, CPU): `torchrun --nproc_per_node=2` and `gnnbatch train --nproc 2`.

Every test starts its processes with a subprocess timeout, so a hang fails the test instead of stalling the suite.
Run as a script (`torchrun ... tests/test_distributed.py SCENARIO OUT`), this file is also the ranks' program.
"""
import json, os, subprocess, sys
from dataclasses import replace
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch

HERE = Path(__file__).resolve().parent
GRAPHS, SEED = 200, 3                                       # a small QM9 subset: 160 training graphs
TIMEOUT = 150                                               # seconds a launch may take before the test fails

def config():
    from gnnbatch_nb.training.train import TrainConfig
    return TrainConfig(batch_size=8, algorithm='packing', seed=SEED)

def small_store():
    from gnnbatch_nb.data.qm9 import qm9
    return qm9(verbose=False).subset(np.arange(GRAPHS))

# ---------------------------------------------------------------- the ranks' program (under torchrun)

def _recording(t):
    "Record the graph indices of every batch `t` trains on."
    seen, step = [], t.train_step                  # the batches the steps train on (built ahead or not)
    def train_step(b):
        seen.append(b.graph_index.tolist()); return step(b)
    t.train_step = train_step
    return seen

def scenario_train(out:Path):
    "One epoch on each rank, then the same run interrupted by a checkpoint and resumed; each rank saves what it saw."
    from gnnbatch_nb.training.distributed import torchrun_env, process_group, DistributedTrainer, resume_distributed
    env = torchrun_env(); rank, W = env['rank'], env['world_size']
    torch.set_num_threads(1)
    with process_group(rank, W, torch.device('cpu'), timeout_s=120):
        store = small_store()
        full = DistributedTrainer(store, config(), 'cpu', rank, W)
        seen, steps = _recording(full), len(full.sampler)
        full.fit(steps, progress=False)
        half = DistributedTrainer(store, config(), 'cpu', rank, W); half.fit(steps // 2, progress=False)
        half.save(out/'ck.pt')
        rest = resume_distributed(store, out/'ck.pt', 'cpu', rank, W); rest.fit(steps - steps // 2, progress=False)
        comp = DistributedTrainer(store, replace(config(), compile='compiled', backend='eager'), 'cpu', rank, W)
        comp.fit(4, progress=False)                       # backend 'eager': Dynamo traces and counts, no code made
        torch.save(dict(seen=seen, steps=steps, losses=full.losses,
                        params=[p.detach() for p in full.model.parameters()],
                        buffers=[b.detach() for b in full.model.buffers()], records=full.step_records(steps),
                        resumed=[p.detach() for p in rest.model.parameters()], resumed_losses=rest.losses,
                        train=full.splits['train'], epoch_after=full.epoch, compiles=comp.step_compiles,
                        compiled_shapes=comp.step_shapes), out/f'rank{rank}.pt')

def scenario_fail(out:Path):
    "`train` with rank 1 raising at its third step, while rank 0 goes on to the all-reduce."
    from gnnbatch_nb.training import distributed as D
    env = D.torchrun_env()
    if env['rank'] == 1:
        step = D.DistributedTrainer.train_step
        def failing(self, batch):
            if self.step == 2: raise ValueError("injected failure on rank 1 at step 3")
            return step(self, batch)
        D.DistributedTrainer.train_step = failing
    D.train(D.TrainRun(config(), limit=GRAPHS, steps=50, progress=False, timeout_s=120))

# ---------------------------------------------------------------- launching

def torchrun(scenario:str, out:Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(HERE/'test_distributed.py'), scenario, str(out)]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    p = torchrun('train', out)
    assert p.returncode == 0, p.stderr[-3000:]
    return [torch.load(out/f'rank{r}.pt', weights_only=False) for r in range(2)]

def test_every_graph_exactly_once_per_epoch(trained):
    seen = [g for r in trained for batch in r['seen'] for g in batch]
    assert sorted(seen) == sorted(trained[0]['train'].tolist())     # the whole training split, none twice
    assert all(r['epoch_after'] == 0 for r in trained)               # exactly one epoch was consumed

def test_equal_step_counts(trained):
    assert trained[0]['steps'] == trained[1]['steps'] > 5
    assert len(trained[0]['seen']) == len(trained[1]['seen']) == trained[0]['steps']

def test_identical_parameters_on_all_ranks(trained):
    assert all(torch.equal(p, q) for p, q in zip(trained[0]['params'], trained[1]['params']))
    assert all(torch.equal(p, q) for p, q in zip(trained[0]['buffers'], trained[1]['buffers']))   # not broadcast
    assert trained[0]['losses'] != trained[1]['losses']                # ... though the ranks trained on other graphs

def test_the_first_rank_ready_waits_at_least_the_imbalance(trained):
    "One clock for both processes: the all-reduce cannot end before the last rank's gradients are ready."
    from gnnbatch_nb.training.distributed import wait_parts
    rec = pd.concat([r['records'] for r in trained], ignore_index=True)
    assert rec.ready_at.notna().all() and len(rec) == 2 * trained[0]['steps']
    parts = wait_parts(rec)
    first = rec.sort_values(['step', 'ready_at']).groupby('step').wait_s.first()
    assert (first >= parts.imbalance_s - 1e-6).all() and (parts.transfer_s >= 0).all()
    assert (rec.groupby('step').wait_s.min() <= parts.transfer_s + 1e-9).all()

def test_one_shape_compiles_once_per_rank(trained):
    for r in trained:
        assert len(set(r['compiled_shapes'])) == 1                      # packing: one shape on every rank ...
        assert r['compiles'][0] >= 1 and r['compiles'][1:] == [0, 0, 0]  # ... compiled at the first step only
    assert trained[0]['compiled_shapes'][0] == trained[1]['compiled_shapes'][0]

def test_two_processes_equal_one_process_over_the_same_global_batches(trained):
    "Tolerance: relative 1e-4 on the per-step mean loss (float32; the two gradients are summed in another order)."
    from gnnbatch_nb.training.distributed import one_process_equivalent
    torch.set_num_threads(1)
    ref, _ = one_process_equivalent(small_store(), config(), 2, trained[0]['steps'])
    ddp = np.mean([trained[0]['losses'], trained[1]['losses']], axis=0)
    np.testing.assert_allclose(ddp, ref, rtol=1e-4)
    assert np.abs(np.diff(ref)).max() > 1e-3                           # the losses move: the check is not vacuous

def test_resumed_run_ends_with_the_same_parameters(trained):
    for r in trained:
        assert all(torch.equal(p, q) for p, q in zip(r['params'], r['resumed']))
        assert r['losses'] == r['resumed_losses']

def test_a_failing_rank_ends_the_run_named(tmp_path):
    p = torchrun('fail', tmp_path)                                     # the timeout fails the test if it hangs
    assert p.returncode != 0
    assert 'rank 1 of 2 failed: ValueError: injected failure on rank 1 at step 3' in p.stderr, p.stderr[-3000:]

def test_a_failing_spawned_rank_is_named():
    code = ("from gnnbatch_nb.training.distributed import spawn_ranks, _fail_on_rank\n"
            "try: spawn_ranks(_fail_on_rank, (1,), 2)\n"
            "except Exception as e: print(type(e).__name__, e)\n")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=TIMEOUT,
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert 'RankFailed rank 1 failed: ValueError: injected failure on rank 1' in p.stdout, p.stdout + p.stderr[-2000:]

# ---------------------------------------------------------------- the command line

def _has_train_command() -> bool:
    from gnnbatch_nb.cli import build_parser
    try: build_parser().parse_args(['train', '--steps', '1'])
    except SystemExit: return False
    return True

needs_train_command = pytest.mark.xfail(not _has_train_command(), strict=True,
                                        reason="`gnnbatch train` is not registered in 10_cli yet")

def gnnbatch_train(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, '-c', 'import sys; from gnnbatch_nb.cli import main; sys.exit(main())', 'train',
           '--limit', str(GRAPHS), '--algorithm', 'packing', '--batch-size', '8', '--seed', str(SEED), '--json',
           '--no-progress', *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT,
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert p.returncode == 0, p.stderr[-3000:]
    return p

@needs_train_command
def test_gnnbatch_train_one_process(tmp_path):
    r = json.loads(gnnbatch_train('--steps', 6, '--out', tmp_path).stdout)
    assert (r['steps'], r['world_size'], r['compiles_per_rank']) == (6, 1, [0])
    m = pd.read_csv(tmp_path/'metrics.csv')
    assert m.step.tolist() == list(range(1, 7)) and (m.n_graph < m.pad_graph).all()
    assert (tmp_path/'checkpoint.pt').exists()

@needs_train_command
def test_gnnbatch_train_two_processes_resumes_exactly(tmp_path):
    whole, parts = tmp_path/'whole', tmp_path/'parts'
    r = json.loads(gnnbatch_train('--steps', 8, '--nproc', 2, '--out', whole).stdout)
    assert (r['steps'], r['world_size']) == (8, 2)
    gnnbatch_train('--steps', 4, '--nproc', 2, '--out', parts)
    r2 = json.loads(gnnbatch_train('--steps', 8, '--nproc', 2, '--out', parts, '--resume').stdout)
    assert (r2['start_step'], r2['steps']) == (4, 4)
    a, b = (torch.load(d/'checkpoint.pt', weights_only=False)['model'] for d in (whole, parts))
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = pd.read_csv(parts/'metrics.csv')
    assert m.groupby('rank').step.apply(list).tolist() == [list(range(1, 9))] * 2

if __name__ == '__main__':                                            # a rank's program under torchrun
    {'train': scenario_train, 'fail': scenario_fail}[sys.argv[1]](Path(sys.argv[2]))
