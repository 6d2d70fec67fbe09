"""Learning-rate search: the selection rule on synthetic records, the table file and its errors."""
import pytest

from sara.lr_search import (DEFAULT_GRID, LRTableError, check_grid, select_learning_rates, tuned_lr,
                            write_lr_table)


def _rows(method, budget, fid_clip_by_lr, seeds=(0,), backbone="tiny"):
    return [{"backbone": backbone, "method": method, "budget": budget, "lr": lr, "seed": s,
             "fid": fid + s, "clip_score": clip - s}
            for lr, (fid, clip) in fid_clip_by_lr.items() for s in seeds]


def test_default_grid_is_valid_and_bad_grids_are_refused():
    assert check_grid(DEFAULT_GRID) == tuple(sorted(DEFAULT_GRID))
    with pytest.raises(ValueError, match="spanning"):
        check_grid([1e-4, 2e-4, 3e-4, 4e-4, 5e-4])          # 5 values, only 5x
    with pytest.raises(ValueError, match="spanning"):
        check_grid([1e-5, 1e-4, 1e-3, 1e-2])                  # 4 values
    with pytest.raises(ValueError, match="positive"):
        check_grid([0, 1e-4, 1e-3, 1e-2, 1e-1])


def test_each_method_gets_its_own_best_rate_by_vlhi():
    rows = (_rows("sara", "50M", {1e-4: (100, 30), 1e-3: (60, 29), 1e-2: (50, 10)}, seeds=(0, 1, 2))
            + _rows("lora", "50M", {1e-4: (70, 30), 1e-3: (65, 20), 1e-2: (200, 5)}))
    rates, scores = select_learning_rates(rows)
    assert rates == {"tiny": {"sara": {"50M": 1e-3}, "lora": {"50M": 1e-4}}}
    s = scores["tiny"]["sara"]["50M"]
    assert [g["n_seeds"] for g in s["grid"]] == [3, 3, 3]
    assert s["grid"][1]["fid"] == pytest.approx(61.0)      # mean over seeds 0, 1, 2 (fid + seed)
    assert s["at_edge"] is False
    assert scores["tiny"]["lora"]["50M"]["at_edge"] is True


def test_ties_go_to_the_smaller_rate_and_bad_rows_are_named():
    # two rates with the same (FID, CLIP) tie on VLHI
    rows = _rows("full", "none", {1e-5: (50, 30), 1e-4: (50, 30), 1e-3: (90, 20)})
    rates, _ = select_learning_rates(rows)
    assert rates["tiny"]["full"]["none"] == 1e-5
    with pytest.raises(ValueError, match="lacks"):
        select_learning_rates([{"backbone": "tiny", "method": "sara", "budget": "5M", "lr": 1e-3, "fid": 1.0}])


def test_table_roundtrip_and_clear_errors(tmp_path):
    rates, scores = select_learning_rates(_rows("sara", "5M", {1e-4: (100, 30), 1e-3: (60, 29), 1e-2: (50, 10)}))
    write_lr_table(tmp_path / "tiny.yaml", rates["tiny"], scores["tiny"], {"seeds": [0]})
    assert tuned_lr("tiny", "sara", "5M", root=tmp_path) == 1e-3
    with pytest.raises(LRTableError, match="no learning-rate table for backbone 'sd15'"):
        tuned_lr("sd15", "sara", "5M", root=tmp_path)
    with pytest.raises(LRTableError, match="no tuned rate for method 'lora' at budget '5M'"):
        tuned_lr("tiny", "lora", "5M", root=tmp_path)
    (tmp_path / "bad.yaml").write_text("rates: {sara: {5M: fast}}\n")
    with pytest.raises(LRTableError, match="rates.sara.5M must be a number"):
        tuned_lr("bad", "sara", "5M", root=tmp_path)
    (tmp_path / "broken.yaml").write_text("rates: [1, 2\n")
    with pytest.raises(LRTableError, match="not valid YAML"):
        tuned_lr("broken", "sara", "5M", root=tmp_path)


def test_train_lr_tuned_reads_the_table_and_records_its_policy(tmp_path, monkeypatch):
    import sara.lr_search
    from sara.budget import resolve_lr

    rates, scores = select_learning_rates(_rows("lora", "5M", {1e-4: (100, 30), 3e-4: (60, 29), 1e-2: (50, 10)}))
    write_lr_table(tmp_path / "tiny.yaml", rates["tiny"], scores["tiny"])
    monkeypatch.setattr(sara.lr_search, "LR_TABLE_DIR", tmp_path)
    lr, record = resolve_lr("tuned", None, 123, ("tiny", "lora", "5M"))
    assert lr == 3e-4 and record["policy"] == "tuned" and record["table"].endswith("tiny.yaml")
    with pytest.raises(LRTableError, match="method 'sara'"):
        resolve_lr("tuned", None, 123, ("tiny", "sara", "5M"))
    with pytest.raises(ValueError, match="'eq12' or 'tuned'"):
        resolve_lr("fast", None, 123, ("tiny", "sara", "5M"))



def test_lr_table_analysis_writes_each_backbones_rates(tmp_path):
    import pandas as pd

    from analysis import lr_table

    rows = (_rows("sara", "5M", {1e-4: (100, 30), 1e-3: (60, 29), 1e-2: (50, 10)}, seeds=(0, 1))
            + _rows("lora", "5M", {1e-4: (70, 30), 1e-3: (65, 20), 1e-2: (200, 5)}, backbone="sd15"))
    df = pd.DataFrame([dict(r, dataset="Expedition", experiment="lr_search", variant=f"lr{r['lr']}",
                            threshold=2e-3 if r["method"] == "sara" else None) for r in rows])
    df.to_csv(tmp_path / "results.csv", index=False)
    files = lr_table.main(["--results", str(tmp_path / "results.csv"), "--out", str(tmp_path / "out"),
                           "--tables", str(tmp_path / "lr")])
    assert tuned_lr("tiny", "sara", "5M", root=tmp_path / "lr") == 1e-3
    assert tuned_lr("sd15", "lora", "5M", root=tmp_path / "lr") == 1e-4
    md = (tmp_path / "out" / "lr_table.md").read_text()
    assert "chosen" in md and "Eq. 12" in md and any(str(f).endswith("lr_table.md") for f in files)
