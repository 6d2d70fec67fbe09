"""VLHI (SPEC Eq. 8): error cases and the paper's Table 1 reproduced from its FID/CLIP cells."""
import math

import numpy as np
import pandas as pd
import pytest

from sara.metrics import VLHIError, add_mean_rows, add_vlhi, vlhi
from sara.metrics.vlhi import load_reported, long_to_wide, reproduce_reported


def test_formula_small_group():
    v = vlhi([100.0, 120.0, 110.0], [30.0, 28.0, 29.0])
    np.testing.assert_allclose(v, [2.0, 0.0, 1.0])
    assert v.dtype == np.float64


def test_range_and_order():
    rng = np.random.default_rng(0)
    f, c = rng.uniform(100, 200, 13), rng.uniform(25, 30, 13)
    v = vlhi(f, c)
    assert v.min() >= 0 and v.max() <= 2
    # best FID gets 1 from its FID term; best CLIP gets 1 from its CLIP term
    assert v[np.argmin(f)] >= 1 and v[np.argmax(c)] >= 1


@pytest.mark.parametrize(
    "fid, clip, match",
    [
        ([1.0], [2.0], "at least two"),
        ([], [], "at least two"),
        ([1.0, 2.0], [1.0], "equal lengths"),
        ([1.0, math.nan], [1.0, 2.0], "NaN"),
        ([1.0, 2.0], [1.0, float("inf")], "NaN/inf"),
        ([5.0, 5.0, 5.0], [1.0, 2.0, 3.0], "every fid value"),
        ([1.0, 2.0], [7.0, 7.0], "every clip value"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "one-dimensional"),
    ],
)
def test_errors(fid, clip, match):
    with pytest.raises(VLHIError, match=match):
        vlhi(fid, clip)
    assert issubclass(VLHIError, ValueError)


def test_add_vlhi_groups_and_names_bad_group():
    df = pd.DataFrame(
        {
            "backbone": ["a", "a", "a", "b"],
            "dataset": ["x", "x", "x", "x"],
            "FID": [100.0, 120.0, 110.0, 50.0],
            "CLIP": [30.0, 28.0, 29.0, 20.0],
        }
    )
    with pytest.raises(VLHIError, match=r"group \{'backbone': 'b', 'dataset': 'x'\}"):
        add_vlhi(df)
    out = add_vlhi(df.iloc[:3])
    np.testing.assert_allclose(out["VLHI"], [2.0, 0.0, 1.0])
    assert "VLHI" not in df.columns  # copy, not in place


def test_add_mean_rows_convention():
    df = pd.DataFrame(
        {
            "backbone": ["s"] * 4,
            "params": ["5M"] * 4,
            "method": ["A", "A", "B", "B"],
            "dataset": ["d1", "d2", "d1", "d2"],
            "FID": [10.0, 30.0, 20.0, 40.0],
            "CLIP": [1.0, 3.0, 2.0, 2.0],
        }
    )
    m = add_mean_rows(df)
    mean = m[m.dataset == "Mean"].set_index("method")
    assert mean.loc["A", "FID"] == 20.0 and mean.loc["B", "FID"] == 30.0
    assert mean.loc["A", "CLIP"] == 2.0 and mean.loc["B", "CLIP"] == 2.0
    with pytest.raises(VLHIError, match="missing dataset"):
        add_mean_rows(df.iloc[:3])


def test_reported_table1_layout():
    w = long_to_wide(load_reported().query("table == 'table1'"))
    assert len(w) == 234 and w["VLHI"].notna().all()
    sizes = w.groupby(["backbone", "dataset"]).size()
    # 3 backbones x 6 dataset columns (5 + Mean); 4 methods x 3 budgets + Full = 13 rows each
    assert len(sizes) == 18 and (sizes == 13).all()


@pytest.mark.parametrize("recompute_mean", [False, True])
def test_reproduces_all_234_table1_vlhi_cells(recompute_mean):
    r = reproduce_reported("table1", recompute_mean=recompute_mean)
    assert len(r) == 234
    bad = r[~(r["abs_err"] <= 0.011)]
    assert bad.empty, bad[["backbone", "params", "method", "dataset", "VLHI", "VLHI_recomputed"]]
