"""ListOps with five attention patterns on one kernel: dense, window, BigBird, routing, top-k.

A small pre-norm transformer classifies ListOps sequences (generated offline by the LRA grammar, see
listops_data.py). Sequences are batched without padding (laid end to end, ``ptr`` marks them); a
CLS token opens each sequence and is global in every pattern (it attends to and is attended by its
whole sequence), and the classifier reads it. Every model runs in its own process so its peak
memory (max RSS) is its own.

    .venv/bin/python examples/listops.py                      # quick: lengths 32..160, a few minutes
    .venv/bin/python examples/listops.py --min-length 500 --max-length 2000 --train 20000 --epochs 5
    .venv/bin/python examples/listops.py --models window,routing --epochs 1

Prints a table (test accuracy, training time, attention entries per token, peak RSS) and writes
examples/results/listops.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from listops_data import CLS, VOCAB_SIZE, ListOpsSample, generate  # noqa: E402

from sparsegt import Graph, sparse_attention  # noqa: E402
from sparsegt.patterns import RoutingPattern, bigbird, full, global_tokens, topk, union, window  # noqa: E402

MODELS = ("dense", "window", "bigbird", "routing", "topk")


class PatternChoice:
    """Builds the attention pattern of one batch for one model kind; content kinds use q/k per layer."""

    def __init__(self, kind: str, window_size: int, random_keys: int, top_k: int) -> None:
        self.kind, self.window_size, self.random_keys, self.top_k = kind, window_size, random_keys, top_k
        self.step = 0

    def static(self, lengths: Tensor) -> Graph | None:
        """The pattern shared by all layers, or None when each layer builds its own from q/k."""
        cls = global_tokens(lengths, 1)
        if self.kind == "dense":
            ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
            return full(Graph.empty(int(ptr[-1]), ptr=ptr))
        if self.kind == "window":
            return union(window(lengths, self.window_size), cls)
        if self.kind == "bigbird":
            self.step += 1   # fresh random links each step (BigBird draws them once; both work)
            return bigbird(lengths, self.window_size // 2, 1, self.random_keys, seed=self.step)
        return None

    def dynamic(self, q: Tensor, k: Tensor, lengths: Tensor, router: RoutingPattern | None) -> Graph:
        ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        batch = Graph.empty(int(ptr[-1]), ptr=ptr)
        if self.kind == "routing":
            routed = router(q, k, batch=batch)
        else:
            routed = topk(q, k, full(batch), self.top_k)
        own = torch.arange(q.shape[0])
        self_loops = Graph(torch.arange(q.shape[0] + 1), own, ptr=ptr)   # never an empty row
        return union(routed, global_tokens(lengths, 1), self_loops)


class Block(nn.Module):
    """Pre-norm transformer block over a sparse pattern: x + Attn(LN x); x + MLP(LN x)."""

    def __init__(self, dim: int, heads: int, routing_clusters: int | None) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.router = RoutingPattern(routing_clusters, dim, decay=0.99) if routing_clusters else None

    def forward(self, x: Tensor, pattern: Graph | None, choice: PatternChoice, lengths: Tensor) -> Tensor:
        n, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, 3, self.heads, dim // self.heads).unbind(1)
        if pattern is None:
            pattern = choice.dynamic(q, k, lengths, self.router)
        x = x + self.proj(sparse_attention(q, k, v, pattern).reshape(n, dim))
        return x + self.mlp(self.norm2(x))


class ListOpsClassifier(nn.Module):
    def __init__(self, kind: str, dim: int, heads: int, layers: int, max_length: int, clusters: int) -> None:
        super().__init__()
        self.token = nn.Embedding(VOCAB_SIZE, dim)
        self.position = nn.Embedding(max_length + 1, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, clusters if kind == "routing" else None)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, ids: Tensor, positions: Tensor, lengths: Tensor, choice: PatternChoice) -> Tensor:
        x = self.token(ids) + self.position(positions)
        pattern = choice.static(lengths)
        for block in self.blocks:
            x = block(x, pattern, choice, lengths)
        first = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)[:-1]])     # the CLS of each sequence
        return self.head(self.norm(x[first]))


def collate(samples: list[ListOpsSample]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    seqs = [torch.tensor([CLS] + s.ids) for s in samples]
    lengths = torch.tensor([len(s) for s in seqs])
    positions = torch.cat([torch.arange(len(s)) for s in seqs])
    return torch.cat(seqs), positions, lengths, torch.tensor([s.label for s in samples])


def batches(samples: list[ListOpsSample], size: int, shuffle: bool, seed: int):
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)) if shuffle else \
        torch.arange(len(samples))
    for start in range(0, len(samples), size):
        yield collate([samples[int(i)] for i in order[start:start + size]])


def train_one(kind: str, train: list[ListOpsSample], test: list[ListOpsSample], args: dict) -> dict:
    if args["threads"] > 0:
        torch.set_num_threads(args["threads"])
    torch.manual_seed(args["seed"])
    choice = PatternChoice(kind, args["window"], args["random_keys"], args["top_k"])
    model = ListOpsClassifier(kind, args["dim"], args["heads"], args["layers"], args["max_length"],
                              args["clusters"])
    opt = torch.optim.AdamW(model.parameters(), lr=args["lr"], weight_decay=0.01)
    start, tokens = time.perf_counter(), 0
    for epoch in range(args["epochs"]):
        model.train()
        for ids, positions, lengths, labels in batches(train, args["batch_size"], True, args["seed"] + epoch):
            loss = nn.functional.cross_entropy(model(ids, positions, lengths, choice), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tokens += ids.numel()
    train_s = time.perf_counter() - start
    model.eval()
    correct, entries, test_tokens = 0, 0, 0
    with torch.no_grad():
        for ids, positions, lengths, labels in batches(test, args["batch_size"], False, 0):
            correct += int((model(ids, positions, lengths, choice).argmax(1) == labels).sum())
            pattern = choice.static(lengths)
            if pattern is None:   # content patterns: count the first layer's pattern
                block = model.blocks[0]
                x = model.token(ids) + model.position(positions)
                n = x.shape[0]
                q, k, _ = block.qkv(block.norm1(x)).reshape(n, 3, block.heads, -1).unbind(1)
                pattern = choice.dynamic(q, k, lengths, block.router)
            entries += pattern.num_edges
            test_tokens += ids.numel()
    return {"model": kind, "test_acc": correct / len(test), "train_s": train_s,
            "train_tokens_per_s": tokens / train_s, "keys_per_token": entries / test_tokens,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--min-length", type=int, default=32)
    p.add_argument("--max-length", type=int, default=160)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--window", type=int, default=16, help="window half-width (BigBird uses half of it)")
    p.add_argument("--random-keys", type=int, default=8)
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--clusters", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads per model (0: torch's default; "
                   "use 1 on a crowded machine, where spinning worker threads slow everything down)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    kinds = [m for m in args.models.split(",") if m]
    for m in kinds:
        if m not in MODELS:
            raise SystemExit(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    start = time.perf_counter()
    train = generate(args.train, args.min_length, args.max_length, seed=args.seed)
    test = generate(args.test, args.min_length, args.max_length, seed=args.seed + 10_000)
    mean_len = sum(len(s.ids) for s in train) / len(train)
    print(f"generated {len(train)} train / {len(test)} test sequences, mean length {mean_len:.0f} "
          f"({time.perf_counter() - start:.1f} s)", flush=True)
    config = vars(args) | {"max_length": args.max_length + 1}
    rows = []
    ctx = mp.get_context("spawn")
    for kind in kinds:
        with ctx.Pool(1) as pool:
            row = pool.apply(train_one, (kind, train, test, config))
        rows.append(row)
        print(f"  {row}", flush=True)
    majority = max(sum(s.label == c for s in test) for c in range(10)) / len(test)
    print(f"\nListOps, lengths {args.min_length}..{args.max_length}, {args.train} train, "
          f"{args.epochs} epochs (majority class: {majority:.3f})")
    header = ("model", "test acc", "train s", "tokens/s", "keys/token", "peak RSS MB")
    print(f"{header[0]:<8} {header[1]:>8} {header[2]:>8} {header[3]:>9} {header[4]:>10} {header[5]:>11}")
    for r in rows:
        print(f"{r['model']:<8} {r['test_acc']:>8.3f} {r['train_s']:>8.1f} {r['train_tokens_per_s']:>9.0f} "
              f"{r['keys_per_token']:>10.1f} {r['peak_rss_mb']:>11.0f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "listops.json").write_text(json.dumps({"config": vars(args), "majority": majority, "rows": rows},
                                                 indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
