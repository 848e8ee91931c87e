"""Longer learning-metric runs for nbs/24_learning.ipynb (the 150-step grid is in run_learning.py).

SchNet on QM9 (U0), B=32, lr=1e-3, 1200 steps, eager, one CPU thread; dynamic and static-64 x seeds 0..2.
static-2^N is left out: it trains on exactly the same batches, in the same order, as static-64 (see the notebook).
Validation curve every 300 steps and final val/test metrics on the first 1000 molecules of each split.
Run from the repository root:  python results/learning/run_learning_long.py   (resumes if interrupted)
"""
import time, torch
torch.set_num_threads(1)
from gnnbatch_nb.experiments.runner import expand_grid, run_grid

# seed-major order: an interrupted call still leaves complete (dynamic, static-64) pairs
GRID = [g for s in (0, 1, 2) for g in expand_grid(dataset='qm9', model='schnet', batch_size=32, algorithm=['dynamic', 'static-64'],
                                                   compile='eager', steps=1200, seed=s, lr=1e-3, device='cpu')]
EVAL = dict(eval_limit=1000, eval_every=300)
OUT = 'results/learning/learning_long.csv'

if __name__ == '__main__':
    t0 = time.perf_counter()
    res = run_grid(GRID, OUT, **EVAL)
    print(res[['algorithm', 'seed', 'status', 'wall_s', 'combined_median', 'loss_last100', 'val_mae', 'test_mae', 'test_rmse']].to_string())
    print(f'wall time of this call: {time.perf_counter() - t0:.0f} s')
