"""Faults injected into training: folders that hold runs, two writers, full disks, damaged checkpoints, resumes with
other options, edited sources, interrupts (real signals to real processes) and names checked before work. Each case
gives one line and exit status 2 (130 for an interrupt), and loses nothing."""
import contextlib, errno, gzip, io, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from torch_geometric.data import Data
from gnnbatch_nb.cli import main
from gnnbatch_nb.graphs import file_fingerprint
from gnnbatch_nb.training.train import load_checkpoint
from gnnbatch_nb.training.distributed import lock_folder, metrics_until

GNNBATCH = shutil.which('gnnbatch') or str(Path(sys.executable).parent/'gnnbatch')
ENV = {**{k: v for k, v in os.environ.items() if k != 'GNNBATCH_MP36K'}, 'OMP_NUM_THREADS': '1'}


def in_process(*argv):
    "`main` in this process: exit status, stdout, stderr."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in argv])
        except SystemExit as e: rc = e.code
    return rc, out.getvalue(), err.getvalue()


def one_line_error(rc, out, err, *wanted, code=2):
    assert rc == code, (rc, out, err)
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    for w in wanted: assert w in err, (w, err)


def pyg_file(path, n=30, nan_at=None, seed=0):
    "A user's small dataset of `n` molecule-like graphs (a NaN target at graph `nan_at`)."
    g = torch.Generator().manual_seed(seed)
    data = [Data(z=torch.randint(1, 9, (k,), generator=g), pos=torch.randn(k, 3, generator=g),
                 y=torch.randn(1, generator=g)) for k in torch.randint(2, 12, (n,), generator=g).tolist()]
    if nan_at is not None: data[nan_at].y = torch.tensor([float('nan')])
    torch.save(data, path)
    return path


@pytest.fixture(autouse=True)
def exact_subnormals_after():
    "Training in this process flushes subnormals (`flush_denormals`); later tests (hypothesis) need them exact."
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory): return pyg_file(tmp_path_factory.mktemp('user')/'tiny.pt')


def train(tiny, out, *more):
    return in_process('train', '--data', tiny, '--batch-size', 4, '--no-progress', '--out', out, *more)

# ---------------------------------------------------------------- runs own their folder

def test_a_folder_holding_a_run_is_refused_then_moved_aside(tiny, tmp_path):
    R = tmp_path/'R'
    assert train(tiny, R, '--steps', 3)[0] == 0
    metrics = (R/'metrics.csv').read_text()
    one_line_error(*train(tiny, R, '--steps', 2), f'--out {R} holds a run', '--resume', '--overwrite')
    assert (R/'metrics.csv').read_text() == metrics and load_checkpoint(R/'checkpoint.pt')['step'] == 3
    rc, out, err = train(tiny, R, '--steps', 2, '--overwrite')
    assert rc == 0 and 'was moved to' in err, err
    old, = tmp_path.glob('R.old-*')
    assert (old/'metrics.csv').read_text() == metrics                        # the old run kept whole
    assert len(pd.read_csv(R/'metrics.csv')) == 2
    one_line_error(*train(tiny, R, '--steps', 4, '--resume', '--overwrite'), 'give one of them')


def test_a_second_writer_is_refused(tiny, tmp_path):
    R = tmp_path/'R'; R.mkdir()
    held = lock_folder(R)                                                    # another process writing R
    try: one_line_error(*train(tiny, R, '--steps', 2), 'is being written by another process', str(os.getpid()))
    finally: held.close()
    assert not (R/'metrics.csv').exists()
    assert train(tiny, R, '--steps', 2)[0] == 0                              # released: it runs


def fail_fsync_of(name):
    "An `os.fsync` that fails with a full disk for files whose name contains `name`."
    real = os.fsync
    def fsync(fd):
        if name in os.readlink(f'/proc/self/fd/{fd}'): raise OSError(errno.ENOSPC, 'No space left on device')
        return real(fd)
    return fsync


def test_metrics_truncation_is_atomic(tmp_path, monkeypatch):
    m = tmp_path/'metrics.csv'; pd.DataFrame(dict(step=range(1, 11), loss=1.0)).to_csv(m, index=False)
    before = m.read_bytes()
    monkeypatch.setattr(os, 'fsync', fail_fsync_of('metrics.csv'))
    with pytest.raises(OSError, match='it needs .* bytes'): metrics_until(m, 4)
    assert m.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ['metrics.csv']
    monkeypatch.undo(); metrics_until(m, 4)
    assert pd.read_csv(m).step.tolist() == [1, 2, 3, 4]

# ---------------------------------------------------------------- checkpoints

def test_full_disk_keeps_the_checkpoint_and_leaves_no_temporary(tiny, tmp_path, monkeypatch):
    R = tmp_path/'R'
    assert train(tiny, R, '--steps', 3)[0] == 0
    monkeypatch.setattr(os, 'fsync', fail_fsync_of('checkpoint.pt'))
    one_line_error(*train(tiny, R, '--steps', 6, '--resume'), 'cannot write', 'checkpoint.pt', 'No space left',
                   'bytes, ')
    assert load_checkpoint(R/'checkpoint.pt')['step'] == 3
    assert not [p for p in R.iterdir() if p.name.endswith('.tmp')]


@pytest.mark.parametrize('damage', ['empty', 'truncated', 'random'])
def test_a_damaged_checkpoint_names_itself_and_the_previous_one(tiny, tmp_path, damage):
    R = tmp_path/'R'
    assert train(tiny, R, '--steps', 4, '--checkpoint-every', 2)[0] == 0
    ck = R/'checkpoint.pt'; good = ck.read_bytes()
    ck.write_bytes({'empty': b'', 'truncated': good[:len(good) // 2], 'random': os.urandom(4096)}[damage])
    one_line_error(*train(tiny, R, '--steps', 6, '--resume'), f'{ck} is damaged (truncated?)',
                   f'the previous checkpoint is {R/"checkpoint.prev.pt"}')
    assert load_checkpoint(R/'checkpoint.prev.pt')['step'] == 2


@pytest.mark.parametrize('flag, first, then', [('--limit', 20, 25), ('--batch-size', 4, 5), ('--lr', 0.001, 0.002),
                                               ('--algorithm', 'dynamic', 'packing')])
def test_resume_with_another_option_names_it_and_both_values(tiny, tmp_path, flag, first, then):
    base = ['train', '--data', tiny, '--no-progress', '--out', tmp_path/'R']
    opts = lambda v: [flag, v] + ([] if flag == '--batch-size' else ['--batch-size', 4])
    assert in_process(*base, '--steps', 2, *opts(first))[0] == 0
    one_line_error(*in_process(*base, '--steps', 4, '--resume', *opts(then)),
                   f'made with {flag} {first}, this run has {flag} {then}')


def test_resume_names_an_option_given_on_one_side_only():
    from gnnbatch_nb.training.train import check_same
    with pytest.raises(ValueError, match='made with no --limit, this run has --limit 20; give the same --limit'):
        check_same(dict(limit=None), dict(limit=20))


def test_resume_on_edited_data_is_refused(tmp_path):
    data = pyg_file(tmp_path/'mine.pt')
    assert train(data, tmp_path/'R', '--steps', 2)[0] == 0
    pyg_file(data, seed=1)                                                  # same name, other graphs
    one_line_error(*train(data, tmp_path/'R', '--steps', 4, '--resume'), 'made on other data')

# ---------------------------------------------------------------- caches keyed by content

def test_an_edited_source_of_the_same_size_is_rebuilt(tmp_path):
    from gnnbatch_nb.data.crystals import mp36k, packaged_mp36k
    with gzip.open(packaged_mp36k(), 'rt') as f: lines = [next(f) for _ in range(4)]
    rec = json.loads(lines[0]); gap = rec['band_gap']
    src = tmp_path/'mp.jsonl.gz'
    def write(value):
        rec['band_gap'] = value
        with gzip.open(src, 'wt') as f: f.write(json.dumps(rec) + '\n' + ''.join(lines[1:]))
        os.utime(src, ns=(0, 0))                                             # the same modification time too
    write(1.25); size, fp = src.stat().st_size, file_fingerprint(src)
    first = mp36k(src, cache_dir=tmp_path/'cache', verbose=False)
    write(1.75)
    assert src.stat().st_size == size and file_fingerprint(src) != fp
    second = mp36k(src, cache_dir=tmp_path/'cache', verbose=False)
    band = second.target_names.index('band_gap')
    assert (first.y[0, band], second.y[0, band]) == (1.25, 1.75)

# ---------------------------------------------------------------- interrupts: real signals to real processes

def wait_for(path, proc, timeout=120):
    t0 = time.monotonic()
    while not Path(path).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.2)


@pytest.mark.parametrize('nproc', [1, 2])
def test_ctrl_c_in_train_saves_a_checkpoint_and_names_it(tiny, tmp_path, nproc):
    R = tmp_path/'R'
    p = subprocess.Popen([GNNBATCH, 'train', '--data', str(tiny), '--batch-size', '4', '--steps', '1000000',
                          '--checkpoint-every', '3', '--nproc', str(nproc), '--out', str(R), '--no-progress'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(R/'metrics.csv', p); time.sleep(0.5)
    one_line_error(*train(tiny, R, '--steps', 4, '--resume'), 'is being written by another process', str(p.pid))
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    step = load_checkpoint(R/'checkpoint.pt')['step']
    one_line_error(p.returncode, out, err, f'interrupted (SIGINT) after step {step}',
                   f'the checkpoint {R/"checkpoint.pt"} holds step {step}', '--resume', code=130)
    m = pd.read_csv(R/'metrics.csv')
    assert m.step.max() == step and len(m) == step * nproc                # every finished step kept, once
    assert step > 0
    if nproc == 1:                                                          # and the run continues from there
        assert train(tiny, R, '--steps', step + 2, '--resume')[0] == 0
        assert pd.read_csv(R/'metrics.csv').step.tolist() == list(range(1, step + 3))


def test_sigterm_in_train_stops_the_same_way(tiny, tmp_path):
    R = tmp_path/'R'
    p = subprocess.Popen([GNNBATCH, 'train', '--data', str(tiny), '--batch-size', '4', '--steps', '1000000',
                          '--checkpoint-every', '1000', '--out', str(R), '--no-progress'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(R/'.lock', p); time.sleep(4)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    one_line_error(p.returncode, out, err, 'interrupted (SIGTERM)', code=130)
    assert load_checkpoint(R/'checkpoint.pt')['step'] == len(pd.read_csv(R/'metrics.csv'))

# ---------------------------------------------------------------- names and values checked before work

@pytest.mark.parametrize('argv, wanted', [
    (['--device', 'cpuu'], "--device 'cpuu' is not a device"),
    (['--seed', '-1'], '--seed must be an integer >= 0, got -1'),
    (['--lr', '-1'], '--lr must be a positive number, got -1'),
    (['--lr', 'nan'], '--lr must be a positive number, got nan'),
    (['--nproc', '6', '--limit', '5'], '--nproc 6 is more than the --limit 5 graphs'),
    (['--compile', 'compiled', '--backend', 'inductr'], "--backend 'inductr' is not a torch.compile backend"),
])
def test_train_checks_its_options_before_loading_data(argv, wanted, tmp_path):
    missing = tmp_path/'no-such.pt'                                          # loading it would fail otherwise
    one_line_error(*in_process('train', '--data', missing, '--steps', 2, *argv), wanted)


def test_more_processes_than_batches_is_refused_before_any_starts(tmp_path):
    five = pyg_file(tmp_path/'five.pt', n=5)
    t0 = time.perf_counter()
    one_line_error(*in_process('train', '--data', five, '--steps', 2, '--nproc', 3), '--nproc 3', 'use --nproc 1')
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize('argv, wanted', [
    (['--modes', 'eagr'], "argument --modes: invalid choice: 'eagr'"),
    (['--modes', 'compiled', '--backend', 'inductr'], "--backend 'inductr' is not a torch.compile backend"),
    (['--device', 'cpuu'], "--device 'cpuu' is not a device"),
])
def test_bench_models_checks_names_before_any_dataset_loads(argv, wanted, tmp_path):
    one_line_error(*in_process('bench', 'models', '--cache-dir', tmp_path/'cache', *argv), wanted)
    assert not (tmp_path/'cache').exists()


def test_make_plan_refuses_sizes_that_are_not_sizes_and_bool_batch_sizes():
    from gnnbatch_nb.sizes import GraphSizes
    from gnnbatch_nb.batching.registry import make_plan
    for bad in ([3, 4, 5], None):
        with pytest.raises(ValueError, match='sizes must be a GraphSizes'): make_plan(bad, 'dynamic', 4)
    sizes = GraphSizes(np.array([3, 4, 5]), np.array([6, 12, 20]))
    with pytest.raises(ValueError, match='batch_size must be an integer'): make_plan(sizes, 'static-64', True)
    with pytest.raises(ValueError, match='budget .* graph slots'): make_plan(sizes, 'dynamic', 8, budget=(20, 60, 3))

# ---------------------------------------------------------------- results that look fine and are not

def test_a_split_without_spread_is_refused_not_trained_to_nan(tiny, tmp_path):
    one_line_error(*in_process('train', '--data', tiny, '--limit', 1, '--steps', 2, '--no-progress'), 'no spread',
                   '--limit')


def test_a_nan_target_names_its_graph(tmp_path):
    bad = pyg_file(tmp_path/'bad.pt', nan_at=3)
    one_line_error(*in_process('train', '--data', bad, '--steps', 2, '--no-progress'), 'graph 3', 'is NaN or infinite')


def test_train_json_keeps_stdout_pure_json(tiny, tmp_path):
    rc, out, err = in_process('train', '--data', tiny, '--steps', 2, '--batch-size', 4, '--no-progress', '--json',
                              '--out', tmp_path/'R')
    assert rc == 0 and json.loads(out)['steps'] == 2

# ---------------------------------------------------------------- recommend's input (check_compare_json)

@pytest.mark.parametrize('damage, says', [
    (lambda t, d: '', 'is empty'), (lambda t, d: t[:len(t) // 2], 'is not valid JSON (truncated?'),
    (lambda t, d: '[]', 'holds a list'),
    (lambda t, d: json.dumps({k: v for k, v in d.items() if k != 'cost_model'}), "has no 'cost_model' object"),
    (lambda t, d: t.replace('"batch_size": 32', '"batch_size": "32"'), "settings.batch_size is '32', expected an"),
    (lambda t, d: json.dumps({**d, 'cost_model': {m: {**f, 'coef': [float('nan')] * len(f['coef'])}
                                                  for m, f in d['cost_model'].items()}}), '.coef[0] is nan'),
])
def test_a_broken_compare_json_is_one_line_naming_the_file(tmp_path, damage, says):
    from gnnbatch_nb.cli import check_compare_json
    src = Path(__file__).parents[1]/'results'/'models'/'painn'/'compare.json'
    text = src.read_text(); f = tmp_path/'compare.json'
    f.write_text(damage(text, json.loads(text)))
    with pytest.raises(ValueError) as e: check_compare_json(tmp_path)
    assert str(f) in str(e.value) and says in str(e.value) and '\n' not in str(e.value), e.value

# ---------------------------------------------------------------- data errors name the record and the field

def test_graphs_without_pos_are_refused_for_training(tmp_path):
    torch.save([Data(z=torch.ones(k, dtype=torch.long), y=torch.randn(1)) for k in (3, 4, 5, 6)], tmp_path/'nopos.pt')
    one_line_error(*in_process('train', '--data', tmp_path/'nopos.pt', '--steps', 2, '--no-progress'),
                   'nopos: the graphs have no pos')


@pytest.mark.parametrize('bad, says', [
    (Data(z=torch.tensor([1.5, 6.0]), pos=torch.zeros(2, 3), y=torch.ones(1)), 'graph 1 has z = 1.5 at its atom 0'),
    (Data(z=torch.ones(2, dtype=torch.long), pos=torch.zeros(2, 3), x=torch.ones(2, 3), y=torch.ones(1)),
     'graph 1 has x of (3,) values per node, graph 0 has (2,)'),
])
def test_from_pyg_names_the_graph_and_field(tmp_path, bad, says):
    good = Data(z=torch.ones(3, dtype=torch.long), pos=torch.zeros(3, 3), y=torch.ones(1))
    if 'x' in bad: good.x = torch.ones(3, 2)
    torch.save([good, bad], tmp_path/'mine.pt')
    one_line_error(*in_process('sizes', '--data', tmp_path/'mine.pt'), says)


@pytest.mark.parametrize('line, says', [
    ('[1, 2, 3]', 'line 2: not an MP-36k record'), ('{"idx": 9}', 'line 2: not an MP-36k record'),
    ('{"mp_id": "mp-x", "abc": "abc", "angles": [90, 90, 90], "species": ["Cs"], "frac_coords": [[0, 0, 0]]}',
     'crystal mp-x (record 1) has a field of the wrong kind'),
    ('{"mp_id": "mp-y", "abc": [3, 3, 3], "angles": [90, 90, 90], "species": ["Cs"], "frac_coords": [[0, 0, 0]], '
     '"band_gap": "abc"}', 'crystal mp-y (record 1) has a target that is not a number'),
])
def test_mp36k_lines_of_the_wrong_shape_are_named(tmp_path, line, says):
    from gnnbatch_nb.data.crystals import packaged_mp36k
    with gzip.open(packaged_mp36k(), 'rt') as f: first = next(f)
    with gzip.open(tmp_path/'mp.jsonl.gz', 'wt') as f: f.write(first + line + '\n')
    one_line_error(*in_process('sizes', '--dataset', 'mp36k', '--data', tmp_path/'mp.jsonl.gz', '--cache-dir',
                               tmp_path/'cache'), says)


def test_ctrl_c_in_a_benchmark_is_one_line_naming_what_was_written(tmp_path, monkeypatch):
    import gnnbatch_nb.experiments.bench_batching as bb
    def interrupted(out=None, **kw):
        (Path(out)/'efficiency.csv').write_text('done\n'); raise KeyboardInterrupt
    monkeypatch.setattr(bb, 'run_batching_benchmark', interrupted)
    one_line_error(*in_process('bench', 'batching', '--quick', '--out', tmp_path), 'gnnbatch bench batching: interrupted',
                   f'{tmp_path} holds efficiency.csv', code=130)
