"""A user's own PyG data: `GraphStore.from_pyg`, the padded batch carrying its features, PyG's own `DataLoader` driven
by any algorithm (`PyGBatchSampler`), a PyG training loop end to end, and `--data my_dataset.pt --target`."""
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from hypothesis import given, settings, strategies as st
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.loader import DataLoader as PyGDataLoader
from torch_geometric.nn import global_mean_pool
from gnnbatch_nb.graphs import GraphStore, pyg_sizes
from gnnbatch_nb.data.datasets import load_dataset
from gnnbatch_nb.batching.registry import ALGORITHMS
from gnnbatch_nb.loading import PyGBatchSampler, PlanSampler, collate, batch_loader

GNNBATCH = shutil.which('gnnbatch') or str(Path(sys.executable).parent/'gnnbatch')


def user_graphs(n_graph=60, seed=0, y_shape=(1,)):
    "Graphs as a user has them: features x [n, 3], a ring of edges with edge_attr [e, 2], y, extra per-graph fields."
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(torch.randint(2, 10, (n_graph,), generator=g).tolist()):
        x = torch.randn(n, 3, generator=g)
        ei = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
        y = x[:, 0].mean().reshape(y_shape) if y_shape == (1,) else torch.randn(*y_shape, generator=g)
        out.append(Data(x=x, edge_index=ei, edge_attr=torch.randn(n, 2, generator=g),
                        pos=torch.randn(n, 3, generator=g), y=y, name=f'g{i}', weight=torch.tensor([float(i)])))
    return out


def test_from_pyg_keeps_every_field():
    data = user_graphs(20)
    s = GraphStore.from_pyg(data, name='mine')
    assert (s.n_node == [d.num_nodes for d in data]).all() and (s.n_edge == [d.num_edges for d in data]).all()
    assert s.x.shape == (sum(d.num_nodes for d in data), 3) and s.edge_attr.shape == (int(s.n_edge.sum()), 2)
    assert sorted(s.graph_attr) == ['name', 'weight'] and s.graph_attr['name'][7] == 'g7'
    for g in (0, 7, 19):
        back = s.to_pyg(g)
        assert torch.allclose(back.x, data[g].x) and torch.allclose(back.edge_attr, data[g].edge_attr)
        assert torch.equal(back.edge_index, data[g].edge_index) and torch.allclose(back.pos, data[g].pos)
        assert abs(float(back.y) - float(data[g].y)) < 1e-6


@settings(max_examples=25, deadline=None)
@given(shape=st.sampled_from([(1,), (3,), (1, 4), (2, 2)]), n_graph=st.integers(1, 6))
def test_from_pyg_takes_y_of_any_per_graph_shape(shape, n_graph):
    data = user_graphs(n_graph, y_shape=shape)
    s = GraphStore.from_pyg(data)
    k = int(np.prod(shape))
    assert s.y.shape == (n_graph, k) and s.info['y_shape'] == list(shape)
    assert s.target_names == (['y'] if k == 1 else [f'y{j}' for j in range(k)])
    assert np.allclose(s.y, np.stack([d.y.numpy().reshape(-1) for d in data]))


def test_from_pyg_takes_datasets_and_batches(tmp_path):
    data = user_graphs(10)
    InMemoryDataset.save(data, tmp_path/'ds.pt')
    ds = InMemoryDataset(); ds.load(str(tmp_path/'ds.pt'))
    a, b = GraphStore.from_pyg(ds), GraphStore.from_pyg(next(iter(PyGDataLoader(data, batch_size=10))))
    assert (a.n_node == b.n_node).all() and np.allclose(a.x, b.x) and (a.edge_index == b.edge_index).all()


def test_the_padded_batch_carries_the_features_with_masks():
    data = user_graphs(12)
    s = GraphStore.from_pyg(data, target_names=['mean_x0'])
    idx = [3, 0, 7]
    n, e = int(s.n_node[idx].sum()), int(s.n_edge[idx].sum())
    pb = collate(s, idx, shape=(n + 5, e + 4, 5))
    assert pb.x.shape == (n + 5, 3) and pb.edge_attr.shape == (e + 4, 2) and pb.graph_attr['weight'].shape == (5, 1)
    assert torch.allclose(pb.x[pb.node_mask], torch.cat([data[i].x for i in idx]))
    assert (pb.x[~pb.node_mask] == 0).all() and (pb.edge_attr[~pb.edge_mask] == 0).all()
    assert torch.allclose(pb.edge_attr[pb.edge_mask], torch.cat([data[i].edge_attr for i in idx]))
    assert pb.graph_attr['weight'][:3, 0].tolist() == [3.0, 0.0, 7.0] and 'name' not in pb.graph_attr  # strings stay
    two = GraphStore.from_pyg(user_graphs(12, y_shape=(1, 2)))
    assert collate(two, idx, target='all').y.shape == (3, 2) and collate(two, idx, target='y1').y.shape == (3,)


def test_to_pyg_is_the_real_graphs_and_padding_is_masked():
    data = user_graphs(12)
    s = GraphStore.from_pyg(data)
    idx = [5, 2, 9, 1]
    pb = collate(s, idx, shape=(int(s.n_node[idx].sum()) + 3, int(s.n_edge[idx].sum()) + 2, 6))
    ref = PyGDataLoader([data[i] for i in idx], batch_size=4).__iter__().__next__()
    real = pb.to_pyg()
    assert real.num_graphs == 4 and real.num_nodes == ref.num_nodes and real.num_edges == ref.num_edges
    assert torch.allclose(global_mean_pool(real.x, real.batch), global_mean_pool(ref.x, ref.batch), atol=1e-6)
    padded = pb.to_pyg(padding=True)
    assert padded.num_graphs == 6
    pooled = global_mean_pool(padded.x, padded.batch, size=padded.num_graphs)
    assert torch.allclose(pooled[padded.graph_mask], global_mean_pool(ref.x, ref.batch), atol=1e-6)


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_pyg_dataloader_with_any_algorithm_sees_every_graph_once(algorithm):
    data = user_graphs(50)
    for world_size in (1, 2):
        samplers = [PyGBatchSampler(data, algorithm, 8, seed=2, rank=r, world_size=world_size)
                    for r in range(world_size)]
        for epoch in range(2):
            seen = []
            for smp in samplers:
                smp.set_epoch(epoch)
                for batch in PyGDataLoader(data, batch_sampler=smp):
                    seen += batch.weight.reshape(-1).long().tolist()
                    assert batch.num_graphs <= 8
            assert len(set(seen)) == len(seen)                       # no graph twice
            if world_size == 1 or algorithm != 'concat': assert sorted(seen) == list(range(50))
        assert len(samplers[0]) == len(samplers[-1])                 # ranks step together


def test_plan_sampler_as_batch_sampler_works_at_once():
    data = user_graphs(30)
    loader = PyGDataLoader(data, batch_sampler=PlanSampler(pyg_sizes(data), 'static-64', 8))
    assert sum(b.num_graphs for b in loader) == 30


class TinyGNN(torch.nn.Module):
    "One round of mean message passing over `edge_index`, a linear read-out, mean pooling: a few hundred weights."
    def __init__(self):
        super().__init__(); self.mix, self.out = torch.nn.Linear(6, 8), torch.nn.Linear(8, 1)
    def forward(self, b):
        src, dst = b.edge_index
        msg = torch.zeros_like(b.x).index_add_(0, dst, b.x[src])
        deg = torch.bincount(dst, minlength=b.num_nodes).clamp(min=1)[:, None]
        h = torch.relu(self.mix(torch.cat([b.x, msg / deg], 1)))
        return global_mean_pool(self.out(h), b.batch, size=b.num_graphs)[:, 0]


@pytest.mark.parametrize('algorithm', list(ALGORITHMS))
def test_a_pyg_training_loop_trains_with_every_algorithm(algorithm):
    "A PyG loop whose only change is `batch_sampler=PyGBatchSampler(...)`: the loss falls within a few epochs."
    torch.manual_seed(0)
    data, model = user_graphs(64), TinyGNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    sampler = PyGBatchSampler(data, algorithm, 9, seed=0)
    loader = PyGDataLoader(data, batch_sampler=sampler)                       # the one changed line
    def epoch_loss(train):
        total = 0.0
        for b in loader:
            loss = torch.nn.functional.mse_loss(model(b), b.y.reshape(-1))
            if train: opt.zero_grad(); loss.backward(); opt.step()
            total += float(loss.detach()) * b.num_graphs
        return total / len(data)
    before = epoch_loss(False)
    for e in range(6): sampler.set_epoch(e); epoch_loss(True)
    after = epoch_loss(False)
    assert np.isfinite(after) and after < 0.7 * before, (before, after)


def test_load_dataset_and_the_command_line_open_a_users_file(tmp_path):
    data = user_graphs(25, y_shape=(1, 2))
    torch.save(data, tmp_path/'my_dataset.pt')
    s = load_dataset('pyg', data=tmp_path/'my_dataset.pt', target='y1')
    assert s.target_names == ['y1'] and np.allclose(s.y[:, 0], [float(d.y[0, 1]) for d in data])
    r = subprocess.run([GNNBATCH, 'plan', '--data', tmp_path/'my_dataset.pt', '--target', 'y0',
                        '--algorithm', 'packing', '--batch-size', '6', '--json'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep['dataset'] == 'pyg' and rep['n_used'] == 25 and rep['n_shapes'] == 1
    r = subprocess.run([GNNBATCH, 'sizes', '--data', tmp_path/'my_dataset.pt', '--target', 'U0'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "my_dataset has no target 'U0'; it has ['y0', 'y1']" in r.stderr, r.stderr
