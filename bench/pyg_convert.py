"""PyG batch -> `Graph`: `Graph.from_pyg(batch)` (one vectorised pass) against per-graph conversion.

    .venv/bin/python bench/pyg_convert.py [--graphs 1000] [--repeats 7] [--no-save]

Anchor (measured in the same run): the per-graph path, ``Graph.batch([Graph.from_pyg(d) for d in
batch.to_data_list()])``, which is what `Graph.from_pyg` did before it converted a batch in one pass. Both
results are checked equal before timing. Graphs: molecule-sized (10..40 nodes, about 2.2 directed edges per
node, 9 node and 3 edge features, one graph label). Prints the medians and their ratio; writes
bench/results/pyg_convert.json unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from sparsegt import Graph

try:
    from torch_geometric.data import Batch, Data
except ImportError as err:  # pragma: no cover
    raise SystemExit("this benchmark needs PyTorch Geometric: pip install 'sparsegt[pyg]'") from err


def molecule_like_batch(num_graphs: int, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(num_graphs):
        n = int(torch.randint(10, 41, (1,), generator=generator))
        pairs = torch.randint(0, n, (2, (11 * n) // 10), generator=generator)
        edge_index = torch.cat([pairs, pairs.flip(0)], 1)
        graphs.append(Data(x=torch.randn(n, 9, generator=generator), edge_index=edge_index,
                           edge_attr=torch.randn(edge_index.shape[1], 3, generator=generator),
                           y=torch.randn(1, 1, generator=generator), num_nodes=n))
    return Batch.from_data_list(graphs)


def per_graph(batch: Batch) -> Graph:
    return Graph.batch([Graph.from_pyg(data) for data in batch.to_data_list()])


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def same(a: Graph, b: Graph) -> bool:
    tensors = lambda g: [g.indptr, g.indices, g.ptr, g.edge_ptr, *g.node_data.values(), *g.edge_data.values(),
                         *g.graph_data.values()]
    return all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graphs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    batch = molecule_like_batch(args.graphs)
    if not same(Graph.from_pyg(batch), per_graph(batch)):
        raise SystemExit("Graph.from_pyg(batch) differs from the per-graph conversion")
    vectorised = median_seconds(lambda: Graph.from_pyg(batch), args.repeats)
    looped = median_seconds(lambda: per_graph(batch), args.repeats)
    row = {"graphs": args.graphs, "nodes": int(batch.num_nodes), "edges": int(batch.num_edges),
           "from_pyg_ms": vectorised * 1e3, "per_graph_ms": looped * 1e3, "ratio": looped / vectorised,
           "repeats": args.repeats, "threads": torch.get_num_threads(), "machine": platform.processor() or
           platform.machine(), "torch": torch.__version__}
    print(f"{args.graphs} graphs ({row['nodes']} nodes, {row['edges']} edges), medians of {args.repeats}, "
          f"{row['threads']} threads:")
    print(f"  Graph.from_pyg(batch)        {row['from_pyg_ms']:9.2f} ms")
    print(f"  per-graph + Graph.batch      {row['per_graph_ms']:9.2f} ms   (from_pyg is {row['ratio']:.1f}x faster)")
    if not args.no_save:
        out = Path(__file__).parent / "results" / "pyg_convert.json"
        out.write_text(json.dumps(row, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
