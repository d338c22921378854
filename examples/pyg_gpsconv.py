"""A PyG model with ``GPSConv``, and the same model with ``sparsegt.nn.GPSLayer`` in its place.

The model is plain PyG: node and edge encoders, ``GPSConv`` layers (a ``GINEConv`` local MPNN and multi-head
attention), mean pooling and a linear head, called as ``conv(x, edge_index, batch, edge_attr=e)``. Each
``GPSConv`` is swapped for ``GPSLayer.from_gpsconv(conv)`` (its weights copied), nothing else changes:

    model.convs[i] = GPSLayer.from_gpsconv(model.convs[i])

and the two models give the same outputs and gradients in float64 (asserted, in training and in eval mode).
Then both are timed in float32 (forward + backward; printed, not asserted: it depends on the machine).
PyG's attention pads every graph to the largest one (``to_dense_batch``); ours runs on ``full(batch)``,
every node over the nodes of its own graph, without padding.

    .venv/bin/python examples/pyg_gpsconv.py                       # 256 graphs of 10..120 nodes
    .venv/bin/python examples/pyg_gpsconv.py --graphs 64 --hidden 32 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import GINEConv, GPSConv, global_mean_pool
except ImportError as err:  # pragma: no cover - the message is the point
    raise SystemExit("this example needs PyTorch Geometric: pip install 'sparsegt[pyg]'") from err

from sparsegt.nn import GPSLayer  # noqa: E402
from sparsegt.nn.gps import state_dict_from_gpsconv  # noqa: E402


class PyGGPS(nn.Module):
    """Encoders -> ``layers`` x GPSConv(GINE + multi-head attention) -> mean pool -> linear head."""

    def __init__(self, in_dim: int, edge_dim: int, hidden: int, heads: int, layers: int, out_dim: int,
                 dropout: float = 0.0, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.node_encoder = nn.Linear(in_dim, hidden)
        self.edge_encoder = nn.Linear(edge_dim, hidden)
        self.convs = nn.ModuleList(
            GPSConv(hidden, GINEConv(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))),
                    heads=heads, dropout=dropout, attn_kwargs={"dropout": attn_dropout})
            for _ in range(layers))
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor, batch: Tensor) -> Tensor:
        """x [N, in_dim], edge_index [2, E], edge_attr [E, edge_dim], batch [N] -> [B, out_dim]."""
        x, edge_attr = self.node_encoder(x), self.edge_encoder(edge_attr)
        for conv in self.convs:
            x = conv(x, edge_index, batch, edge_attr=edge_attr)
        return self.head(global_mean_pool(x, batch))


def with_sparsegt_layers(model: PyGGPS) -> PyGGPS:
    """A copy of ``model`` with every ``GPSConv`` replaced by a `GPSLayer` holding the same weights."""
    ours = copy.deepcopy(model)
    for i, conv in enumerate(ours.convs):
        ours.convs[i] = GPSLayer.from_gpsconv(conv)
    return ours


def random_batch(num_graphs: int, min_nodes: int, max_nodes: int, in_dim: int, edge_dim: int, seed: int) -> Batch:
    """Random undirected graphs (about 3 neighbours per node, some isolated nodes) as one PyG batch."""
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(num_graphs):
        n = int(torch.randint(min_nodes, max_nodes + 1, (1,), generator=generator))
        pairs = torch.randint(0, n, (2, (3 * n) // 2), generator=generator)
        edge_index = torch.cat([pairs, pairs.flip(0)], 1)
        graphs.append(Data(x=torch.randn(n, in_dim, generator=generator), edge_index=edge_index,
                           edge_attr=torch.randn(edge_index.shape[1], edge_dim, generator=generator), num_nodes=n))
    return Batch.from_data_list(graphs)


def inputs(batch: Batch, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return batch.x.to(dtype), batch.edge_index, batch.edge_attr.to(dtype), batch.batch


def compare(num_graphs: int = 8, min_nodes: int = 1, max_nodes: int = 12, hidden: int = 16, heads: int = 4,
            layers: int = 2, seed: int = 0) -> float:
    """Build both models in float64 and assert equal outputs and gradients; returns the largest difference."""
    torch.manual_seed(seed)
    batch = random_batch(num_graphs, min_nodes, max_nodes, 5, 3, seed)
    theirs = PyGGPS(5, 3, hidden, heads, layers, 2).double()
    ours = with_sparsegt_layers(theirs)
    largest = 0.0
    for training in (True, False):  # training: BatchNorm on batch statistics (dropout is 0 here)
        theirs.train(training)
        ours.train(training)
        x, edge_index, edge_attr, graph_of_node = inputs(batch, torch.float64)
        x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_theirs = theirs(x_theirs, edge_index, edge_attr, graph_of_node)
        out_ours = ours(x_ours, edge_index, edge_attr, graph_of_node)
        torch.testing.assert_close(out_ours, out_theirs, rtol=1e-10, atol=1e-10)
        largest = max(largest, float((out_ours - out_theirs).abs().max().detach()))
        if training:
            out_theirs.square().sum().backward()
            out_ours.square().sum().backward()
            torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-9, atol=1e-10)
            grads_ours = {name: p.grad for name, p in ours.named_parameters()}
            grads_theirs = gradients_by_our_names(theirs)
            assert sorted(grads_ours) == sorted(grads_theirs)
            for name, reference in grads_theirs.items():
                torch.testing.assert_close(grads_ours[name], reference, rtol=1e-9, atol=1e-10, msg=name)
    return largest


def gradients_by_our_names(model: PyGGPS) -> dict[str, Tensor]:
    """The gradients of a PyG model's parameters under the names its `with_sparsegt_layers` copy gives them."""
    grads = {name: p.grad for name, p in model.named_parameters()}
    out = {name: g for name, g in grads.items() if not name.startswith("convs.")}
    for i in range(len(model.convs)):
        prefix = f"convs.{i}."
        layer = {name[len(prefix):]: g for name, g in grads.items() if name.startswith(prefix)}
        out.update({prefix + name: g for name, g in state_dict_from_gpsconv(layer).items()})
    return out


def median_seconds(step, repeats: int, device: str = "cpu") -> float:
    step()  # warm-up (kernel compilation, allocator)
    times = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_both(num_graphs: int, min_nodes: int, max_nodes: int, hidden: int, heads: int, layers: int,
              repeats: int, device: str = "cpu") -> tuple[float, float]:
    """Median seconds of one forward + backward step of each model (float32, training mode) on ``device``."""
    torch.manual_seed(0)
    batch = random_batch(num_graphs, min_nodes, max_nodes, 5, 3, seed=1)
    theirs = PyGGPS(5, 3, hidden, heads, layers, 2, dropout=0.1, attn_dropout=0.1)
    ours = with_sparsegt_layers(theirs).to(device)
    theirs = theirs.to(device)
    args = [t.to(device) for t in inputs(batch, torch.float32)]

    def step(model: nn.Module):
        def run() -> None:
            model.zero_grad(set_to_none=True)
            model(*args).square().sum().backward()
        return run

    return median_seconds(step(theirs), repeats, device), median_seconds(step(ours), repeats, device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graphs", type=int, default=256)
    parser.add_argument("--min-nodes", type=int, default=10)
    parser.add_argument("--max-nodes", type=int, default=120)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the timing; the float64 check runs on cpu)")
    args = parser.parse_args(argv)
    difference = compare()
    print(f"same outputs and gradients in float64 (largest output difference {difference:.1e})")
    theirs, ours = time_both(args.graphs, args.min_nodes, args.max_nodes, args.hidden, args.heads, args.layers,
                             args.repeats, args.device)
    where = torch.cuda.get_device_name() if args.device != "cpu" else f"{torch.get_num_threads()} CPU threads"
    print(f"forward + backward, {args.graphs} graphs of {args.min_nodes}..{args.max_nodes} nodes, "
          f"{args.layers} layers, hidden {args.hidden}, float32, {where} (medians of {args.repeats}):")
    print(f"  PyG GPSConv        {theirs * 1e3:9.1f} ms   {args.graphs / theirs:9.0f} graphs/s")
    print(f"  sparsegt GPSLayer  {ours * 1e3:9.1f} ms   {args.graphs / ours:9.0f} graphs/s   ({theirs / ours:.2f}x)")


if __name__ == "__main__":
    main()
