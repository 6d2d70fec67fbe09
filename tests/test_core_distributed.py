"""Data-parallel training with SaRA (2 CPU processes, gloo): the optimizer averages the flat
gradient across ranks itself, so ranks stay identical with or without a DDP wrapper."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import sara

try:
    from test_core_utils import mlp, mlp_batch
except ImportError:
    from tests.test_core_utils import mlp, mlp_batch

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")]


def _worker(rank, world, port, use_ddp, out):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        m = mlp()
        opt = sara.SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=2)
        model = nn.parallel.DistributedDataParallel(m) if use_ddp else m
        for i in range(4):
            x, y = mlp_batch(rank * 10 + i)  # different data on each rank
            (model(x) - y).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            assert all(p.grad is None for p in m.parameters())
        torch.save(opt.sparse.values.detach(), os.path.join(out, f"r{rank}_{use_ddp}.pt"))
    finally:
        dist.destroy_process_group()


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_reference():
    """Averaging two ranks' gradients == one process on the mean of their losses."""
    m = mlp()
    opt = sara.SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=2)
    for i in range(4):
        loss = 0
        for rank in range(2):
            x, y = mlp_batch(rank * 10 + i)
            loss = loss + (m(x) - y).pow(2).mean() / 2
        loss.backward()
        opt.step()
        opt.zero_grad()
    return opt.sparse.values.detach()


def test_two_ranks_stay_identical(tmp_path):
    ref = _single_process_reference()
    for use_ddp in (False, True):
        mp.spawn(_worker, args=(2, _port(), use_ddp, str(tmp_path)), nprocs=2)
        v0 = torch.load(tmp_path / f"r0_{use_ddp}.pt")
        v1 = torch.load(tmp_path / f"r1_{use_ddp}.pt")
        assert torch.equal(v0, v1)
        torch.testing.assert_close(v0, ref, rtol=1e-5, atol=1e-6)
