"""Diagnostics: per-layer counts, learned ΔW, share below θ, migration tracker (Fig. 3)."""
import pytest
import torch
from torch import nn

from sara import MigrationTracker, SaRA, delta, per_layer_counts, select, share_below, wrap

try:
    from test_core_utils import mlp, mlp_batch, mlp_loss, snapshot, train
except ImportError:
    from tests.test_core_utils import mlp, mlp_batch, mlp_loss, snapshot, train


def test_per_layer_counts_match_selection():
    m = mlp()
    sel = select(m, threshold=0.4)
    sp = wrap(m, sel)
    counts = per_layer_counts(sp)
    assert counts == {n: c for n, c in sel.per_layer_counts().items() if c > 0}
    assert sp.per_layer_counts() == counts and sum(counts.values()) == sp.count()
    assert per_layer_counts(sel) == sel.per_layer_counts()


def test_delta_is_learned_change_including_retired():
    m = mlp()
    w0 = snapshot(m)
    opt = SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=2)
    train(m, opt, [mlp_batch(i) for i in range(3)], mlp_loss, 5)
    assert opt.sparse.retired  # some entries were dropped at step 2 and kept their value
    d = delta(opt.sparse)
    for n, p in m.named_parameters():
        expect = p.detach() - w0[n]
        if n in d:
            torch.testing.assert_close(d[n], expect, rtol=0, atol=0)
        else:
            assert not expect.any()
    ds = opt.sparse.delta(dense=False)
    assert all(torch.equal(ds[n].to_dense(), d[n]) for n in d)


def test_share_below_and_migration_tracker():
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.01, 0.5, -0.02, 0.9], [0.03, -0.04, 0.6, 0.7]]))
    tr = MigrationTracker(lin, threshold=0.05)
    sp = wrap(lin, select(lin, threshold=0.05))
    assert sp.share_below(0.05) == 1.0
    row = tr.record(0)
    assert row["still_below"] == 1.0 and row["new_below"] == 0.0 and row["initial_below"] == 4
    with torch.no_grad():
        sp.values.copy_(torch.tensor([0.2, -0.01, 0.3, -0.04]))  # two of four leave
    lin(torch.zeros(1, 4))  # forward syncs the weights
    with torch.no_grad():  # an unselected entry falling below θ (only possible with another
        lin.weight[0, 1] = 0.001  # method, e.g. full fine-tuning of the backbone)
    assert share_below(sp, 0.05) == 0.5
    row = tr.record(10)
    assert row["step"] == 10 and row["still_below"] == 0.5
    assert row["now_below"] == 3 and row["newly_below"] == 1
    assert row["new_below"] == pytest.approx(1 / 3)
    assert [r["step"] for r in tr.as_dict()["history"]] == [0, 10]


def test_migration_tracker_without_sara_full_training():
    m = mlp()
    tr = MigrationTracker(m, threshold=0.1)
    opt = torch.optim.AdamW(m.parameters(), lr=5e-2)
    tr.record(0)
    train(m, opt, [mlp_batch(0)], mlp_loss, 5)
    row = tr.record(5)
    assert 0 <= row["still_below"] < 1 and 0 < row["new_below"] <= 1
