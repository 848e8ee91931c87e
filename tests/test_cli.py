"""Integration tests of the `gnnbatch` command line, run as a subprocess like a user would."""
import json, os, shutil, subprocess, sys
import pytest

def run(*args, env=None, check=True):
    r = subprocess.run(['gnnbatch', *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                       timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"gnnbatch {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r

def test_help_lists_commands():
    out = run('--help').stdout
    assert 'sizes' in out

@pytest.mark.parametrize('cmd', [['sizes'], ['plan'], ['bench', 'batching']])
def test_every_command_has_help_and_json(cmd):
    out = run(*cmd, '--help').stdout
    assert '--json' in out

def test_sizes_qm9_json():
    first, r = [json.loads(run('sizes', '--dataset', 'qm9', '--json').stdout) for _ in range(2)]
    assert r['n_graph'] == 130_831
    assert (r['nodes']['min'], r['nodes']['max']) == (3, 29)
    assert abs(r['nodes']['mean'] - 18.03) < 0.01
    assert abs(r['edges']['mean'] - 314) < 2.5 and r['edges']['max'] == 29*28
    assert r['cache_build_seconds'] == first['cache_build_seconds']      # the second run read the cache, built nothing
    # the first run may read the files from disk (CI's clean clone: 3.6 s once); the second finds them in memory
    assert r['load_seconds'] < 2.0, f"loading the cached QM9 a second time took {r['load_seconds']} s"

def test_sizes_splits_partition_qm9():
    n = [json.loads(run('sizes', '--dataset', 'qm9', '--split', s, '--json').stdout)['n_graph']
         for s in ('train', 'val', 'test')]
    assert n == [104_665, 13_083, 13_083]

def test_sizes_mp36k_table_and_json():
    r = json.loads(run('sizes', '--dataset', 'mp36k', '--json').stdout)
    assert r['n_graph'] == 36_737
    assert r['edges']['total'] == 12*r['nodes']['total']          # 12 n edges per crystal
    assert (r['nodes']['min'], r['nodes']['max']) == (1, 200)
    table = run('sizes', '--dataset', 'mp36k').stdout
    assert 'nodes per graph' in table and '36,737 graphs' in table

def test_missing_crystal_file_is_a_clear_error(tmp_path):
    r = run('sizes', '--dataset', 'mp36k', '--data', str(tmp_path/'mp36k_structures.jsonl.gz'), check=False)
    assert r.returncode == 2
    assert 'was not found' in r.stderr and str(tmp_path) in r.stderr and 'pass an existing file' in r.stderr
    assert 'Traceback' not in r.stderr

def test_missing_aflow_download_is_a_clear_error(tmp_path):
    r = run('sizes', '--dataset', 'aflow', '--data', str(tmp_path/'aflow.jsonl'), check=False)
    assert r.returncode == 2 and 'download=True' in r.stderr and 'Traceback' not in r.stderr

def test_unknown_dataset_is_rejected():
    r = run('sizes', '--dataset', 'qm10', check=False)
    assert r.returncode == 2 and 'invalid choice' in r.stderr

def test_corrupt_cache_is_detected_and_rebuilt(tmp_path):
    "Damage a copy of the real QM9 cache: the command warns, rebuilds, and prints the right numbers."
    from gnnbatch_nb.graphs import cache_root
    src = cache_root()/'qm9'
    if not (src/'manifest.json').exists(): run('sizes', '--dataset', 'qm9')
    shutil.copytree(src, tmp_path/'qm9')
    f = tmp_path/'qm9'/'z.npy'
    raw = bytearray(f.read_bytes()); raw[len(raw)//2] ^= 0x01; f.write_bytes(bytes(raw))
    r = run('sizes', '--dataset', 'qm9', env={'GNNBATCH_CACHE': str(tmp_path), 'PYTHONWARNINGS': 'default'})
    assert 'z.npy is corrupt' in r.stderr and 'rebuilding the cache' in r.stderr
    assert '130,831 graphs' in r.stdout
    again = run('sizes', '--dataset', 'qm9', env={'GNNBATCH_CACHE': str(tmp_path), 'PYTHONWARNINGS': 'default'})
    assert 'rebuilding' not in again.stderr                       # the rebuilt cache is valid

def test_partial_cache_without_manifest_is_rebuilt(tmp_path):
    from gnnbatch_nb.graphs import cache_root
    shutil.copytree(cache_root()/'qm9', tmp_path/'qm9')
    (tmp_path/'qm9'/'manifest.json').unlink()                      # as if a build had died before finishing
    r = run('sizes', '--dataset', 'qm9', '--json', env={'GNNBATCH_CACHE': str(tmp_path)})
    assert json.loads(r.stdout)['n_graph'] == 130_831
    assert (tmp_path/'qm9'/'manifest.json').exists()

def test_plan_reports_every_graph_once_and_one_shape_for_dynamic():
    r = json.loads(run('plan', '--dataset', 'qm9', '--split', 'train', '--algorithm', 'dynamic', '--batch-size', '32',
                       '--json').stdout)
    assert r['n_used'] == r['n_graph'] == 104_665 and r['n_shapes'] == 1
    assert 0.5 < r['node_eff'] <= 1 and 0.5 < r['edge_eff'] <= 1
    assert sum(r['graphs_per_batch_hist'].values()) == r['n_batch']

def test_plan_study_quirk_drops_every_bth_graph():
    r = json.loads(run('plan', '--dataset', 'qm9', '--algorithm', 'static-64', '--batch-size', '16', '--drop-every-bth',
                       '--json').stdout)
    assert r['dropped'] == 130_831 - r['n_used'] and r['n_used'] == (130_831 // 16) * 15

def test_plan_too_big_graph_is_a_clear_error_or_skipped():
    r = run('plan', '--dataset', 'mp36k', '--algorithm', 'dynamic', '--batch-size', '2', check=False)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert 'graph 1010 has 136 nodes' in r.stderr and 'too big' in r.stderr and 'Raise the budget' in r.stderr
    assert '--on-too-big skip' in r.stderr and 'on_too_big=' not in r.stderr   # the command line's words
    assert len(r.stderr.strip().splitlines()) == 1
    s = json.loads(run('plan', '--dataset', 'mp36k', '--algorithm', 'dynamic', '--batch-size', '2',
                       '--on-too-big', 'skip',
                       '--json').stdout)
    assert s['skipped'] == 246 and s['n_used'] + s['skipped'] == 36_737

def test_bench_batching_quick_writes_results(tmp_path):
    r = json.loads(run('bench', 'batching', '--quick', '--out', str(tmp_path), '--json').stdout)
    assert {'efficiency', 'throughput', 'planning', 'machine'} <= set(r)
    assert {p.name for p in tmp_path.iterdir()} >= {'efficiency.csv', 'throughput.csv', 'planning.csv', 'machine.json'}
    loaders = {row['loader'] for row in r['throughput']}
    assert 'PyG DataLoader (concat)' in loaders and 'gnnbatch packing' in loaders
