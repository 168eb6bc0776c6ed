"""The PyTorch peer of bench part `models`: d2l's concise RNN/GRU/LSTM.

One-hot inputs, one recurrent layer (nn.RNN / nn.GRU / nn.LSTM), a linear
output layer, SGD with gradient clipping, sequential partition with the state
carried (detached) from batch to batch: d2l's `RNNModel` and `train_ch8`.

    OPENBLAS_NUM_THREADS=1 python3 peer.py --corpus FILE --cell lstm [--world 2]

Times --iters training steps after --warmup steps and prints one JSON line: training
tokens/s (all processes together) and, for --world 1, generation tokens/s
(d2l's predict_ch8: one token at a time). --world 2 runs DistributedDataParallel
with the gloo backend over 2 processes on 127.0.0.1, each taking half of the
batch's streams, so the global batch is the same as with one process.
"""
import argparse
import datetime
import json
import os
import re
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F


def load_corpus(path, max_tokens):
    """d2l's load_corpus_time_machine: letters and spaces, lower case, characters."""
    with open(path, encoding="utf-8") as f:
        lines = [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in f]
    chars = [c for line in lines for c in line]
    vocab = ["<unk>"] + sorted(set(chars), key=lambda c: (-chars.count(c), c))
    index = {c: i for i, c in enumerate(vocab)}
    ids = [index[c] for c in chars]
    return ids[:max_tokens] if max_tokens > 0 else ids, len(vocab)


class RNNModel(nn.Module):
    def __init__(self, cell, vocab_size, hidden):
        super().__init__()
        layer = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = layer(vocab_size, hidden)
        self.vocab_size = vocab_size
        self.linear = nn.Linear(hidden, vocab_size)

    def forward(self, x, state):
        X = F.one_hot(x.T.long(), self.vocab_size).to(torch.float32)
        Y, state = self.rnn(X, state)
        return self.linear(Y.reshape((-1, Y.shape[-1]))), state

    def begin_state(self, batch):
        h = torch.zeros((1, batch, self.rnn.hidden_size))
        return (h, h.clone()) if isinstance(self.rnn, nn.LSTM) else h


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def batches(ids, rows, steps, row0, row_count):
    """Sequential partition over `rows` streams; this process takes rows [row0, row0 + row_count)."""
    corpus = torch.tensor(ids)
    length = (len(ids) - 1) // rows * rows
    xs = corpus[:length].reshape(rows, -1)
    ys = corpus[1 : length + 1].reshape(rows, -1)
    while True:
        for k in range(0, xs.shape[1] - steps + 1, steps):
            yield xs[row0 : row0 + row_count, k : k + steps], ys[row0 : row0 + row_count, k : k + steps]


def clip(params, theta):
    norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
    if norm > theta:
        for p in params:
            p.grad[:] *= theta / norm


def train(rank, world, args, port, out):
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    if world > 1:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    ids, vocab = load_corpus(args.corpus, args.max_tokens)
    net = RNNModel(args.cell, vocab, args.hidden)
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    rows = args.batch // world
    data = batches(ids, args.batch, args.steps, rank * rows, rows)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    state = net.begin_state(rows)

    def step():
        nonlocal state
        x, y = next(data)
        state = detach(state)
        y_hat, state = model(x, state)
        loss = loss_fn(y_hat, y.T.reshape(-1).long())
        opt.zero_grad()
        loss.backward()
        clip(list(net.parameters()), 1.0)
        opt.step()
        return float(loss)

    for _ in range(args.warmup):
        step()
    if world > 1:
        dist.barrier()
    n, t0, c0 = args.iters, time.perf_counter(), time.process_time()
    for _ in range(n):
        loss = step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if rank == 0:
        result = {
            "cell": args.cell,
            "world": world,
            "steps": n,
            "wall_seconds": wall,
            "cpu_seconds_rank0": cpu,
            "threads": torch.get_num_threads(),
            "tokens_per_second": n * args.batch * args.steps / wall,
            "last_loss": loss,
            "parameters": sum(p.numel() for p in net.parameters()),
            "torch": torch.__version__,
        }
        if world == 1:
            result.update(generate(net, ids, args.generate))
        out.put(result) if out is not None else print(json.dumps(result), flush=True)
    if world > 1:
        dist.destroy_process_group()


@torch.no_grad()
def generate(net, ids, length):
    """d2l's predict_ch8: warm up on a 10-token prefix, then feed back the argmax one token at a time."""
    state = net.begin_state(1)
    outputs = [ids[0]]
    for i in ids[1:10]:
        _, state = net(torch.tensor([[outputs[-1]]]), state)
        outputs.append(i)
    t0 = time.perf_counter()
    for _ in range(length):
        y, state = net(torch.tensor([[outputs[-1]]]), state)
        outputs.append(int(y.argmax(dim=1).reshape(1)))
    return {"generate_tokens_per_second": length / (time.perf_counter() - t0)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--cell", choices=["rnn", "gru", "lstm"], default="lstm")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=35)
    p.add_argument("--max-tokens", type=int, default=10000)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--iters", type=int, default=100, help="timed training steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--generate", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.batch % args.world:
        p.error("--batch must be a multiple of --world")
    if args.world == 1:
        train(0, 1, args, None, None)
    else:
        ctx = mp.get_context("spawn")
        out = ctx.SimpleQueue()
        mp.spawn(train, args=(args.world, args, free_port(), out), nprocs=args.world, join=True)
        print(json.dumps(out.get()), flush=True)


if __name__ == "__main__":
    main()
