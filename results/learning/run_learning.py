"""The committed learning-metric runs of nbs/24_learning.ipynb.

SchNet on QM9 (U0), B=32, lr=1e-3, 150 steps, eager, one CPU thread; dynamic / static-64 / static-2^N x seeds 0..4;
validation curve every 50 steps and final val/test metrics on the first 1000 molecules of each split.
Run from the repository root:  python results/learning/run_learning.py   (resumes if interrupted)
"""
import time, torch
torch.set_num_threads(1)
from gnnbatch_nb.experiments.runner import expand_grid, run_grid

GRID = dict(dataset='qm9', model='schnet', batch_size=32, algorithm=['dynamic', 'static-64', 'static-2^N'],
            compile='eager', steps=150, seed=[0, 1, 2, 3, 4], lr=1e-3, device='cpu')
EVAL = dict(eval_limit=1000, eval_every=50)
OUT = 'results/learning/learning.csv'

if __name__ == '__main__':
    t0 = time.perf_counter()
    res = run_grid(expand_grid(**GRID), OUT, **EVAL)
    print(res[['algorithm', 'seed', 'status', 'wall_s', 'combined_median', 'loss_last100', 'val_mae', 'test_mae', 'test_rmse']].to_string())
    print(f'wall time of this call: {time.perf_counter() - t0:.0f} s')
