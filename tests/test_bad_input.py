"""Bad input, through the Python API and the command line: one clear error (what, where, how to fix), exit status 2,
no traceback, and nothing lost or wasted (no dataset built, nothing measured, the store kept in memory)."""
import contextlib, gzip, io, json, os, shutil, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st, HealthCheck
from torch_geometric.data import Data
from gnnbatch_nb.sizes import GraphSizes
from gnnbatch_nb.graphs import GraphStore, cached
from gnnbatch_nb.data.crystals import build_crystals, find_mp36k, packaged_mp36k
from gnnbatch_nb.batching.registry import make_plan, ALGORITHMS
from gnnbatch_nb.batching.packing import plan_dynamic, plan_packing
from gnnbatch_nb.loading import PlanSampler
from gnnbatch_nb.cli import main, in_flags, usable_cores

ENV = {k: v for k, v in os.environ.items() if k != 'GNNBATCH_MP36K'}
GNNBATCH = shutil.which('gnnbatch') or str(Path(sys.executable).parent/'gnnbatch')   # the installed command


def cli(*argv, env=None, timeout=300):
    "The command line as a user runs it: exit status, stdout, stderr."
    r = subprocess.run([GNNBATCH, *map(str, argv)], capture_output=True, text=True,
                       env={**ENV, **(env or {})}, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def in_process(*argv):
    "`main` in this process (fast, for hypothesis): exit status, stdout, stderr."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in argv])
        except SystemExit as e: rc = e.code
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc, out, err, *wanted):
    assert rc == 2, (rc, out, err)
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    for w in wanted: assert w in err, (w, err)


@pytest.fixture(scope='module')
def tiny_pt(tmp_path_factory):
    "A user's own small dataset: 30 molecules-like graphs saved with torch.save."
    g = torch.Generator().manual_seed(0)
    data = [Data(z=torch.randint(1, 9, (n,), generator=g), pos=torch.randn(n, 3, generator=g),
                 y=torch.randn(1, generator=g)) for n in torch.randint(2, 12, (30,), generator=g).tolist()]
    p = tmp_path_factory.mktemp('user')/'tiny.pt'
    torch.save(data, p)
    return p


@pytest.fixture
def blocker(tmp_path):
    "A plain file: no folder can be created below it, even by root (unlike a read-only folder)."
    f = tmp_path/'a-file'; f.write_text('not a folder')
    return f

# ---------------------------------------------------------------- a fresh clone: no shared/ beside it

def test_fresh_clone_finds_the_packaged_crystals(tmp_path):
    "With $GNNBATCH_MP36K unset and a working folder with no shared/ anywhere above it, the packaged copy is used."
    code = ("from gnnbatch_nb.data.crystals import find_mp36k, packaged_mp36k; "
            "f = find_mp36k(); assert f == packaged_mp36k(), f; assert 'shared' not in f.parts, f; print(f)")
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_file() and Path(r.stdout.strip()).stat().st_size > 10_000_000


def test_an_explicit_mp36k_setting_that_does_not_exist_is_an_error(monkeypatch):
    monkeypatch.setenv('GNNBATCH_MP36K', '/nonexistent/x.jsonl.gz')
    with pytest.raises(FileNotFoundError, match='set GNNBATCH_MP36K to an existing file'): find_mp36k()
    rc, out, err = cli('sizes', '--dataset', 'mp36k', env={'GNNBATCH_MP36K': '/nonexistent/x.jsonl.gz'})
    assert_one_line_error(rc, out, err, 'not found at /nonexistent/x.jsonl.gz')
    monkeypatch.delenv('GNNBATCH_MP36K')
    assert find_mp36k() == packaged_mp36k()

# ---------------------------------------------------------------- output and cache folders

def test_compare_checks_out_before_measuring(blocker, tiny_pt):
    t0 = time.perf_counter()
    rc, out, err = cli('compare', '--data', tiny_pt, '--out', blocker/'results')
    assert_one_line_error(rc, out, err, f'--out {blocker}/results: cannot write there', 'nothing has been computed yet')
    assert time.perf_counter() - t0 < 60 and 'compare schnet' not in err          # no measurement started


def test_bench_checks_out_before_measuring(blocker):
    rc, out, err = cli('bench', 'batching', '--quick', '--out', blocker/'bench')
    assert_one_line_error(rc, out, err, f'--out {blocker}/bench: cannot write there')


def test_compare_still_saves_when_out_is_writable(tmp_path, tiny_pt):
    "The check does not get in the way: a writable --out (created if missing) receives the results."
    out_dir = tmp_path/'new'/'folder'
    rc, out, err = cli('compare', '--data', tiny_pt, '--batch-size', '4', '--steps', '2', '--budget', '0',
                       '--modes', 'eager', '--algorithms', 'dynamic', 'concat', '--compile-sample', 'dynamic',
                       '--backend', 'eager', '--out', out_dir)
    assert rc == 0, err
    assert (out_dir/'compare.csv').is_file() and 'dynamic' in out and 'thread(s)' in out
    assert not list(out_dir.glob('.gnnbatch-write-test-*'))                     # the probe file is gone


def test_unwritable_cache_keeps_the_built_store(blocker):
    built = []
    def build():
        built.append(1)
        return GraphStore('toy', np.array([1, 1], np.uint8), np.zeros((2, 3), np.float32), np.array([0, 2]),
                          np.zeros((1, 1)), ['E'], ['eV'])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        s = cached('toy', build, dict(v=1), cache_dir=blocker/'cache', verbose=False)
    assert built == [1] and s.n_graph == 1                                        # built once, returned, not lost
    assert any('cannot be cached' in str(x.message) and 'using it from memory' in str(x.message) for x in w)

# ---------------------------------------------------------------- arguments, before any dataset loads

def test_arguments_are_checked_before_the_dataset_loads(tmp_path):
    empty_cache = tmp_path/'cache'; empty_cache.mkdir()
    t0 = time.perf_counter()
    rc, out, err = cli('plan', '--batch-size', '0', '--cache-dir', empty_cache)
    assert_one_line_error(rc, out, err, "argument --batch-size: expected an integer >= 1, got '0'")
    rc, out, err = cli('plan', '--algorithm', 'dynamic', '--batch-size', '1', '--cache-dir', empty_cache)
    assert_one_line_error(rc, out, err, '--batch-size must be an integer >= 2, got 1')
    assert list(empty_cache.iterdir()) == [] and time.perf_counter() - t0 < 60   # QM9 was not built


@pytest.mark.parametrize('argv,wanted', [
    (('plan', '--algorithm', 'static-64', '--on-too-big', 'skip'),
     '--on-too-big does not apply to --algorithm static-64; it applies to dynamic, packing'),
    (('plan', '--algorithm', 'dynamic', '--drop-every-bth'),
     '--drop-every-bth does not apply to --algorithm dynamic; it applies to static-constant, static-64, static-2^N'),
    (('compare', '--algorithms', 'fastest'), 'unknown algorithms'),
    (('compare', '--batch-size', '2.5'), "argument --batch-size: expected an integer >= 1, got '2.5'"),
    (('compare', '--threads', '0'), "argument --threads: expected an integer >= 1, got '0'"),
    (('sizes', '--cutoff', 'nan'), "argument --cutoff: expected a positive number, got 'nan'"),
    (('sizes', '--dataset', 'pyg'), '--dataset pyg needs --data FILE.pt'),
])
def test_flag_errors_speak_flags(argv, wanted):
    assert_one_line_error(*cli(*argv), wanted)


def test_python_errors_are_rewritten_in_flags():
    odd = GraphSizes.complete([5, 6, 40])
    with pytest.raises(ValueError) as e: plan_dynamic(odd, 4, budget=(16, 64, 4))
    assert "on_too_big='skip'" in str(e.value)                                  # the Python API speaks parameters
    assert '--on-too-big skip' in in_flags(str(e.value)) and 'on_too_big' not in in_flags(str(e.value))


def test_json_into_a_closed_pipe_ends_quietly(tiny_pt):
    p = subprocess.Popen([GNNBATCH, 'plan', '--data', str(tiny_pt), '--json'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    p.stdout.close()                                                              # the reader left, like `| head`
    err = p.stderr.read().decode(); p.wait(timeout=120)
    assert 'Traceback' not in err and 'BrokenPipeError' not in err, err
    r = subprocess.run(f'"{GNNBATCH}" plan --data "{tiny_pt}" --json | head -n 2',
                       shell=True, capture_output=True, text=True, env=ENV, timeout=120)
    assert r.stdout.splitlines() == ['{', ' "dataset": "pyg",'] and 'Traceback' not in r.stderr


def test_threads_default_is_the_usable_cores(tiny_pt):
    from gnnbatch_nb.cli import build_parser
    want = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    assert usable_cores() == want
    assert build_parser().parse_args(['compare']).threads == want
    assert build_parser().parse_args(['bench', 'models']).threads == want

# ---------------------------------------------------------------- bad data, named before heavy work

NACL = dict(abc=[5.64]*3, angles=[90]*3, species=['Na', 'Cl'], frac_coords=[[0, 0, 0], [.5, .5, .5]], E=1.0)

def _mp_file(path, recs):
    with gzip.open(path, 'wt') as fh:
        for r in recs: fh.write(json.dumps(r) + '\n')
    return path


def test_nan_crystal_is_named_before_the_neighbour_search(tmp_path):
    bad = dict(NACL, id='mp-nan', frac_coords=[[0, 0, float('nan')], [.5, .5, .5]])
    with pytest.raises(ValueError, match=r'toy: crystal mp-nan \(record 1\) has a NaN or infinite coordinate'):
        build_crystals([dict(NACL, id='ok'), bad], [('E', 'eV')], 'toy', progress=False)
    recs = [dict(NACL, mp_id='mp-1', e_form_per_atom=0.1, band_gap=1.0),
            dict(NACL, mp_id='mp-2', species=[], frac_coords=[], e_form_per_atom=0.1, band_gap=1.0)]
    f = _mp_file(tmp_path/'mp36k_structures.jsonl.gz', recs)
    t0 = time.perf_counter()
    rc, out, err = cli('sizes', '--dataset', 'mp36k', '--data', f, '--cache-dir', tmp_path/'cache')
    assert_one_line_error(rc, out, err, 'mp36k: crystal mp-2 (record 1) has no atoms')
    assert time.perf_counter() - t0 < 60


def test_empty_and_nan_molecules_are_named(tmp_path):
    with pytest.raises(ValueError, match=r'graph 1 \(id m2\) has no atoms'):
        GraphStore('mols', np.ones(3, np.uint8), np.zeros((3, 3), np.float32), np.array([0, 3, 3]), np.zeros((2, 1)),
                   ['E'], ['eV'], ids=np.array(['m1', 'm2']))
    good = Data(z=torch.ones(2, dtype=torch.long), pos=torch.zeros(2, 3), y=torch.ones(1))
    cases = {'empty.pt': ([good, Data(z=torch.ones(0, dtype=torch.long), pos=torch.zeros(0, 3), y=torch.ones(1))],
                          'graph 1 (id 1) has no atoms'),
             'nan.pt': ([good, Data(z=torch.ones(2, dtype=torch.long),
                                    pos=torch.tensor([[0., 0, 0], [0, float('nan'), 0]]), y=torch.ones(1))],
                        'graph 1 (id 1) has a NaN or infinite coordinate at its atom 1')}
    for name, (data, wanted) in cases.items():
        torch.save(data, tmp_path/name)
        assert_one_line_error(*cli('sizes', '--data', tmp_path/name), f'{name[:-3]}: {wanted}')

# ---------------------------------------------------------------- planning

ODD = GraphSizes.complete([5, 6, 5, 40, 6, 5, 4, 6])

@pytest.mark.parametrize('planner', [plan_dynamic, plan_packing])
def test_impossible_budgets_are_errors_even_when_skipping(planner):
    for budget in [(0, 0, 8), (1, 50, 8)]:
        with pytest.raises(ValueError, match='holds no real graph'): planner(ODD, 4, budget=budget, on_too_big='skip')
    with pytest.raises(ValueError, match='every one of the 8 graphs is too big'):
        planner(ODD, 4, budget=(2, 0, 8), on_too_big='skip')
    p = planner(ODD, 4, budget=(32, 100, 4), on_too_big='skip').validate()      # some fit: a plan, the rest recorded
    assert len(p) > 0 and p.skipped.tolist() == [3]


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_float_batch_sizes_are_refused(algorithm):
    with pytest.raises(ValueError, match='batch_size must be an integer'): make_plan(ODD, algorithm, 2.5)


def test_float_budgets_are_refused_and_estimate_works_for_dynamic():
    for planner in (plan_dynamic, plan_packing):
        with pytest.raises(ValueError, match='budget must be three integers'): planner(ODD, 4, budget=(64.0, 900, 4))
        with pytest.raises(ValueError, match='budget must be three integers'): planner(ODD, 4, budget=(64, 900))
    est = plan_dynamic(ODD, 4, budget='estimate', on_too_big='solo').validate()
    assert est.budget == plan_dynamic(ODD, 4, on_too_big='solo').budget


def test_options_an_algorithm_does_not_take_are_named():
    with pytest.raises(ValueError, match='static-64 takes no option on_too_big; its options are seed, epoch'):
        make_plan(ODD, 'static-64', 4, on_too_big='skip')
    with pytest.raises(ValueError, match='dynamic takes no option drop_every_bth'):
        make_plan(ODD, 'dynamic', 4, drop_every_bth=True)


def test_ranks_are_checked():
    sizes = GraphSizes.complete(np.full(40, 5))
    with pytest.raises(ValueError, match='world_size must be >= 1'): PlanSampler(sizes, 'static-64', 8, world_size=0)
    with pytest.raises(ValueError, match=r'rank must be in 0\.\.1'):
        PlanSampler(sizes, 'static-64', 8, rank=2, world_size=2)
    with pytest.raises(ValueError, match='world_size must be an integer'):
        PlanSampler(sizes, 'static-64', 8, world_size=2.0)
    with pytest.raises(ValueError, match='every rank would run 0 steps'):
        PlanSampler(sizes, 'static-64', 32, world_size=4, sharding='round-robin')
    assert len(PlanSampler(sizes, 'static-64', 8, rank=1, world_size=2)) > 0

# ---------------------------------------------------------------- hypothesis over the command line's numbers

NUMBER_TEXT = st.one_of(st.integers(-3, 70).map(str), st.floats(-5, 70).map(repr),
                        st.sampled_from(['', 'x', '1e3', '0x10', ' 4', '3.0', 'inf', 'nan', '-0']))

def _valid_int(text, minimum):
    try: return int(text, 10) >= minimum
    except ValueError: return False


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=NUMBER_TEXT, epoch=NUMBER_TEXT, algorithm=st.sampled_from(list(ALGORITHMS)))
def test_plan_numbers_either_work_or_fail_in_one_line(tiny_pt, batch_size, epoch, algorithm):
    rc, out, err = in_process('plan', '--data', tiny_pt, '--algorithm', algorithm, f'--batch-size={batch_size}',
                              f'--epoch={epoch}', '--json')
    minimum = 1 if algorithm == 'concat' else 2
    if _valid_int(batch_size, minimum) and _valid_int(epoch, 0):
        assert rc == 0, err
        r = json.loads(out)
        assert r['n_used'] + r['skipped'] + r['dropped'] == 30 and r['batch_size'] == int(batch_size)
    else:
        assert_one_line_error(rc, out, err)
        parse_ok = _valid_int(batch_size, 1)
        flag = '--epoch' if parse_ok and not _valid_int(epoch, 0) else '--batch-size'   # argparse reads in order
        assert flag in err, err


@settings(max_examples=30, deadline=None)
@given(flag=st.sampled_from(['--steps', '--limit', '--threads', '--batch-size', '--horizons']),
       value=st.one_of(st.integers(-5, 0).map(str), st.floats(0.01, 50).filter(lambda v: v != int(v)).map(repr),
                       st.sampled_from(['', 'many', 'nan'])))
def test_compare_refuses_bad_numbers_before_any_work(flag, value):
    rc, out, err = in_process('compare', f'{flag}={value}', '--out', '/nonexistent-never-created')
    assert_one_line_error(rc, out, err, f'argument {flag}: expected an integer >= ')
    assert not Path('/nonexistent-never-created').exists()
