"""Selection rules: |W0| < θ, exact-k smallest/largest/random, scores, budget -> θ, errors."""
import pytest
import torch
from torch import nn

from sara import Selection, select, select_for_budget, select_from_scores, threshold_for_budget
from sara.core.selection import index_dtype

try:
    from test_core_utils import mlp
except ImportError:  # tests/ imported as a package
    from tests.test_core_utils import mlp


def _flat_abs(model):
    return torch.cat([p.detach().abs().reshape(-1).float() for p in model.parameters()])


def _flat_selected(model, sel: Selection):
    """Selection as positions into the concatenation of all parameters (model order)."""
    out, off = [], 0
    for n, p in model.named_parameters():
        out.append(sel.indices[n].long() + off)
        off += p.numel()
    return torch.cat(out)


def _with_ties():
    m = mlp()
    with torch.no_grad():
        m.fc1.bias.zero_()  # 16 exact ties at |w| = 0
        m.norm.bias.zero_()
    return m


def test_threshold_rule_matches_dense_mask_sorted_int32():
    m = mlp()
    sel = select(m, threshold=0.3)
    assert sel.rule == "threshold" and sel.threshold == 0.3
    for n, p in m.named_parameters():
        idx = sel.indices[n]
        assert idx.dtype == torch.int32
        assert torch.equal(idx.long(), torch.nonzero(p.detach().abs().reshape(-1) < 0.3).squeeze(1))
        assert torch.equal(sel.mask(n), p.detach().abs() < 0.3)
    assert sel.count() == int((_flat_abs(m) < 0.3).sum())
    assert sel.per_layer_counts()["fc1.weight"] == int((m.fc1.weight.abs() < 0.3).sum())
    assert sel.total() == sum(p.numel() for p in m.parameters())


def test_index_dtype_switches_to_int64_at_2_pow_31():
    assert index_dtype(2**31 - 1) == torch.int32
    assert index_dtype(2**31) == torch.int64


@pytest.mark.parametrize("k", [1, 17, 100, 255])
def test_smallest_is_exact_k_with_ties_in_model_order(k):
    m = _with_ties()
    sel = select(m, k=k)  # rule inferred: smallest
    assert sel.rule == "smallest" and sel.count() == k
    ref = torch.sort(_flat_abs(m), stable=True).indices[:k].sort().values
    assert torch.equal(_flat_selected(m, sel).sort().values, ref)
    # the effective θ admits every selected entry
    sel_abs = _flat_abs(m)[_flat_selected(m, sel)]
    assert bool((sel_abs < sel.threshold).all())


@pytest.mark.parametrize("k", [1, 40, 200, 272])
def test_largest_is_exact_k(k):
    m = _with_ties()
    sel = select(m, k=k, rule="largest")
    ref = torch.sort(_flat_abs(m), descending=True, stable=True).indices[:k].sort().values
    assert sel.count() == k
    assert torch.equal(_flat_selected(m, sel).sort().values, ref)


def test_random_is_exact_seeded_and_spread():
    m = mlp()
    a = select(m, k=120, rule="random", seed=1)
    b = select(m, k=120, rule="random", seed=1)
    c = select(m, k=120, rule="random", seed=2)
    assert a.count() == 120
    assert all(torch.equal(a.indices[n], b.indices[n]) for n in a.indices)
    assert not all(torch.equal(a.indices[n], c.indices[n]) for n in a.indices)
    counts = a.per_layer_counts()
    assert sum(1 for v in counts.values() if v > 0) >= 5  # not all from one tensor
    for idx in a.indices.values():
        assert torch.equal(idx, idx.sort().values) and idx.unique().numel() == idx.numel()


def test_select_from_scores_takes_k_largest():
    m = mlp()
    g = torch.Generator().manual_seed(3)
    scores = {n: torch.randn(p.shape, generator=g) for n, p in m.named_parameters()}
    sel = select_from_scores(m, scores, 50)
    flat = torch.cat([scores[n].reshape(-1) for n, _ in m.named_parameters()])
    ref = torch.sort(flat, descending=True, stable=True).indices[:50].sort().values
    assert torch.equal(_flat_selected(m, sel).sort().values, ref)


def test_select_from_scores_subset_and_errors():
    m = mlp()
    sel = select_from_scores(m, {"fc1.weight": m.fc1.weight.detach().abs()}, 5)
    assert list(sel.indices) == ["fc1.weight"] and sel.count() == 5
    with pytest.raises(ValueError, match="unknown parameter names"):
        select_from_scores(m, {"nope": torch.zeros(3)}, 1)
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(16, 6\)"):
        select_from_scores(m, {"fc1.weight": torch.zeros(3)}, 1)


def test_threshold_for_budget_hits_n():
    m = mlp()
    for n in (1, 10, 123, 250, 272):
        theta = threshold_for_budget(m, n)
        assert int((_flat_abs(m) < theta).sum()) == n
        assert select(m, threshold=theta).count() == n
    # ties: 32 zeros; closest achievable count
    m = _with_ties()
    theta = threshold_for_budget(m, 20)
    assert int((_flat_abs(m) < theta).sum()) in (0, 32)
    assert int((_flat_abs(m) < threshold_for_budget(m, 31)).sum()) == 32


def _zero_output_layer(seed=0):
    """An MLP whose output layer is zero-initialised, as AnimateDiff's motion modules' output
    projections are: 68 exact zeros (fc2: 64 weights + 4 biases), more than small budgets."""
    m = mlp(seed)
    with torch.no_grad():
        m.fc2.weight.zero_()
        m.fc2.bias.zero_()
    return m


@pytest.mark.parametrize("n", [1, 20, 67])
def test_budget_inside_exact_zeros_selects_exactly_n_in_model_order(n):
    m = _zero_output_layer()
    sel = select_for_budget(m, n)
    assert sel.count() == n and sel.k == n and sel.rule == "smallest"
    # the first n zeros in model order: fc2.weight's first n entries
    want = {"emb.weight": 0, "fc1.weight": 0, "fc1.bias": 0, "norm.weight": 0, "norm.bias": 0,
            "fc2.weight": min(n, 64), "fc2.bias": max(0, n - 64)}
    assert sel.per_layer_counts() == want
    assert torch.equal(_flat_selected(m, sel).sort().values,
                       torch.sort(_flat_abs(m), stable=True).indices[:n].sort().values)
    assert sel.threshold > 0 and bool((_flat_abs(m)[_flat_selected(m, sel)] < sel.threshold).all())
    assert sel.meta["zero_ties"] == 68
    again = select_for_budget(m, n)
    assert all(torch.equal(sel.indices[k], again.indices[k]) for k in sel.indices)


@pytest.mark.parametrize("n", [1, 10, 123, 250, 272])
def test_budget_selection_is_the_threshold_rule_when_theta_can_hit_it(n):
    """Without a tie at zero the budget selection is |W0| < θ at threshold_for_budget's θ, bit
    for bit (the paper's rule), also when a tie at zero lies below the budget."""
    for m in (mlp(), _with_ties(), _zero_output_layer()):
        if n <= 68 and not bool((_flat_abs(m) > 0).all()):
            continue  # inside the zeros: the test above
        theta = threshold_for_budget(m, n)
        want = select(m, threshold=theta)
        got = select_for_budget(m, n)
        assert got.rule == "threshold" and got.threshold == theta
        assert all(torch.equal(got.indices[k], want.indices[k]) for k in want.indices)


def test_threshold_for_budget_warns_when_the_budget_is_inside_the_zeros():
    m = _zero_output_layer()
    with pytest.warns(UserWarning, match=r"68 entries in scope are exactly 0 \(fc2.weight 64, "
                      r"fc2.bias 4.*select_for_budget"):
        theta = threshold_for_budget(m, 20)
    assert int((_flat_abs(m) < theta).sum()) == 68  # unchanged: the closest count a θ gives


def test_params_scope_names_regex_predicate():
    m = mlp()
    a = select(m, threshold=0.3, params=["fc1.weight", "fc2.bias"])
    assert list(a.indices) == ["fc1.weight", "fc2.bias"]
    b = select(m, threshold=0.3, params=r"fc\d\.weight")
    assert list(b.indices) == ["fc1.weight", "fc2.weight"]
    c = select(m, threshold=0.3, params=lambda n, p: p.ndim == 1)
    assert all(len(s) == 1 for s in c.shapes.values())
    k = select(m, k=7, params=["fc2.weight"])
    assert k.count() == 7 and list(k.indices) == ["fc2.weight"]


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("theta", [0, 0.0, -1e-3])
def test_threshold_must_be_positive(theta):
    with pytest.raises(ValueError, match="threshold must be > 0"):
        select(mlp(), threshold=theta)


def test_threshold_selecting_nothing_says_smallest_value():
    m = mlp()
    smallest = float(_flat_abs(m).min())
    with pytest.raises(ValueError) as e:
        select(m, threshold=1e-9)
    msg = str(e.value)
    total = sum(p.numel() for p in m.parameters())
    assert f"selects 0 of {total:,} entries" in msg
    assert f"{smallest:.6g}" in msg


@pytest.mark.parametrize("rule", ["smallest", "largest", "random"])
def test_budget_larger_than_model(rule):
    m = mlp()
    total = sum(p.numel() for p in m.parameters())
    with pytest.raises(ValueError) as e:
        select(m, k=total + 1, rule=rule)
    assert f"{total + 1:,}" in str(e.value) and f"{total:,}" in str(e.value)
    with pytest.raises(ValueError, match="larger than the model"):
        threshold_for_budget(m, total + 5)


@pytest.mark.parametrize("k", [0, -3, 2.5])
def test_budget_must_be_positive_int(k):
    with pytest.raises(ValueError, match="positive integer"):
        select(mlp(), k=k, rule="smallest")


def test_unknown_param_names():
    with pytest.raises(ValueError, match=r"unknown parameter names: \['fc9.weight'\]"):
        select(mlp(), threshold=0.1, params=["fc1.weight", "fc9.weight"])
    with pytest.raises(ValueError, match="matches no parameter"):
        select(mlp(), threshold=0.1, params="nothing.*")


def test_rule_errors():
    with pytest.raises(ValueError, match="unknown selection rule"):
        select(mlp(), threshold=0.1, rule="biggest")
    with pytest.raises(ValueError, match="needs a budget k"):
        select(mlp(), rule="random")
    with pytest.raises(ValueError, match="either threshold or k"):
        select(mlp(), threshold=0.1, k=3, rule="threshold")


def test_fp16_parameters_compare_in_float32():
    lin = nn.Linear(8, 8).half()
    sel = select(lin, threshold=0.1)
    ref = lin.weight.detach().float().abs() < 0.1
    assert torch.equal(sel.mask("weight"), ref)
