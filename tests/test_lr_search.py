"""Learning-rate search: the selection rule on synthetic records, the table file and its errors."""
import pytest

from sara.lr_search import (DEFAULT_GRID, LRTableError, check_grid, select_learning_rates, tuned_lr,
                            write_lr_table)


def _rows(method, budget, fid_clip_by_lr, seeds=(0,), backbone="tiny", pad=True):
    """Result rows of a grid; ``pad`` adds two rates 10x and 100x below it with the grid's worst FID
    and worst CLIP (a valid 5-rate grid; the VLHI of the given rates is unchanged: same min/max)."""
    grid = dict(fid_clip_by_lr)
    if pad:
        worst = (max(f for f, _ in grid.values()), min(c for _, c in grid.values()))
        grid = {min(grid) / 100: worst, min(grid) / 10: worst, **grid}
    return [{"backbone": backbone, "method": method, "budget": budget, "lr": lr, "seed": s,
             "fid": fid + s, "clip_score": clip - s}
            for lr, (fid, clip) in grid.items() for s in seeds]


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
    assert [g["n_seeds"] for g in s["grid"]] == [3, 3, 3, 3, 3]
    assert s["grid"][3]["fid"] == pytest.approx(61.0)      # mean over seeds 0, 1, 2 (fid + seed)
    assert s["at_edge"] is False
    rates, scores = select_learning_rates(_rows("lora", "50M", {1e-4: (70, 30), 1e-3: (65, 20), 1e-2: (200, 5),
                                                                 3e-2: (300, 4), 1e-1: (400, 3)}, pad=False))
    assert rates["tiny"]["lora"]["50M"] == 1e-4 and scores["tiny"]["lora"]["50M"]["at_edge"] is True


def test_an_unfinished_grid_gets_no_rate_and_does_not_stop_the_others():
    rows = _rows("sara", "50M", {1e-4: (100, 30), 1e-3: (60, 29), 1e-2: (50, 10)}) + _rows(
        "lora", "50M", {1e-4: (70, 30), 1e-3: (65, 20)}, pad=False)  # 2 of 5 rates done
    rates, scores = select_learning_rates(rows)
    assert rates == {"tiny": {"sara": {"50M": 1e-3}}}
    lora = scores["tiny"]["lora"]["50M"]
    assert lora["chosen"] is None and "need >= 5 rates" in lora["incomplete"] and len(lora["grid"]) == 2


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
    base = {"backbone": "tiny", "method": "full", "budget": "none", "lr": 1e-3, "seed": 0, "fid": 900.0,
            "clip_score": 31.0, "variant": "base"}  # the pre-trained model: a reference row, never a rate
    df = pd.DataFrame([dict(r, dataset="Expedition", experiment="lr_search", variant=r.get("variant", f"lr{r['lr']}"),
                            threshold=2e-3 if r["method"] == "sara" else None) for r in rows + [base]])
    df.to_csv(tmp_path / "results.csv", index=False)
    files = lr_table.main(["--results", str(tmp_path / "results.csv"), "--out", str(tmp_path / "out"),
                           "--tables", str(tmp_path / "lr")])
    assert tuned_lr("tiny", "sara", "5M", root=tmp_path / "lr") == 1e-3
    assert tuned_lr("sd15", "lora", "5M", root=tmp_path / "lr") == 1e-4
    md = (tmp_path / "out" / "lr_table.md").read_text()
    assert "chosen" in md and "Eq. 12" in md and any(str(f).endswith("lr_table.md") for f in files)
    assert "| pre-trained | – | – | 900.00 | 31.00 |" in md and "| full |" not in md


def test_lr_sample_grid_shows_each_rate_and_frames_the_chosen_one(tmp_path):
    import numpy as np
    import pandas as pd
    from PIL import Image

    from analysis import lr_table

    rows = _rows("sara", "50M", {1e-4: (100, 30), 1e-3: (60, 29), 1e-2: (50, 10)}, seeds=(1, 0))
    for r in rows:  # seed 0's samples are grey, seed 1's black: the grid shows the lowest seed
        d = tmp_path / f"samples_{r['lr']}_{r['seed']}"
        d.mkdir()
        for k in range(4):
            Image.new("RGB", (32, 32), (128, 128, 128) if r["seed"] == 0 else (0, 0, 0)).save(d / f"{k:05d}.png")
        r.update({"paths.samples": str(d), "experiment": "lr_search", "variant": f"lr{r['lr']}", "dataset": "Expedition"})
    df = pd.DataFrame(rows)
    rates, scores = select_learning_rates(df.to_dict("records"))
    img = np.asarray(lr_table.sample_grid(df, scores, n=2, tile=16))
    tiles = img[30:, 110:]  # below the header, right of the row labels
    assert (tiles == 128).all(axis=-1).sum() == 5 * 2 * 16 * 16  # 5 rates x 2 tiles, lowest seed
    assert not (tiles == 0).all(axis=-1).any()  # no higher seed's tile
    red = (img[..., 0] > 200) & (img[..., 1] < 30)
    chosen = sorted(scores["tiny"]["sara"]["50M"]["grid"], key=lambda g: g["lr"]).index(
        next(g for g in scores["tiny"]["sara"]["50M"]["grid"] if g["lr"] == rates["tiny"]["sara"]["50M"]))
    cols = np.nonzero(red.any(axis=0))[0]
    assert red.any() and 110 + chosen * (2 * 16 + 8) - 2 <= cols.min() < 110 + (chosen + 1) * (2 * 16 + 8)
    assert lr_table.sample_grid(df.assign(**{"paths.samples": str(tmp_path / "none")}), scores) is None
    # one run of the grid without samples here (it ran on another machine): no grid that would leave it out
    gone = pd.concat([df, df.iloc[[0]].assign(lr=3e-2, **{"paths.samples": str(tmp_path / "gone")})])
    assert lr_table.sample_grid(gone, select_learning_rates(gone.to_dict("records"))[1]) is None


def test_lr_sample_grids_are_one_per_budget_each_from_its_own_runs(tmp_path):
    """Runs of 5M on disk draw the 5M figure only: the 50M figure (the docs' copy) is not redrawn
    from another budget's runs."""
    import pandas as pd
    from PIL import Image

    from analysis import lr_table

    rows = []
    for budget in ("50M", "5M"):
        for r in _rows("sara", budget, {1e-4: (100, 30), 1e-3: (60, 29), 1e-2: (50, 10)}):
            d = tmp_path / f"samples_{budget}_{r['lr']}"
            d.mkdir()
            Image.new("RGB", (32, 32), "gray").save(d / "00000.png")
            rows.append(dict(r, **{"paths.samples": str(d)}, experiment="lr_search", variant=f"lr{r['lr']}",
                             dataset="Expedition"))
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "both.csv", index=False)
    lr_table.main(["--results", str(tmp_path / "both.csv"), "--out", str(tmp_path / "both"), "--tables", str(tmp_path / "t")])
    assert {p.name for p in (tmp_path / "both").glob("*.png")} == {"lr_search_samples.png", "lr_search_samples_5M.png"}
    df.loc[df["budget"] == "50M", "paths.samples"] = str(tmp_path / "gone")  # only the 5M runs on disk
    df.to_csv(tmp_path / "5M.csv", index=False)
    lr_table.main(["--results", str(tmp_path / "5M.csv"), "--out", str(tmp_path / "5M"), "--tables", str(tmp_path / "t")])
    assert {p.name for p in (tmp_path / "5M").glob("*.png")} == {"lr_search_samples_5M.png"}


def test_a_grid_is_widened_where_its_best_rate_is_at_an_edge(tmp_path, capsys):
    import csv

    from analysis import lr_table
    from sara.lr_search import next_rate, widen

    assert [next_rate(3e-3, True), next_rate(1e-2, True), next_rate(3e-5, False), next_rate(1e-4, False)] == \
        pytest.approx([1e-2, 3e-2, 1e-5, 3e-5])
    rows = (_rows("lora", "50M", {1e-4: (900, 20), 1e-3: (500, 25), 3e-3: (300, 30)})        # best at the top
            + _rows("full", "none", {1e-4: (300, 30), 1e-3: (500, 25), 3e-3: (900, 20)}, pad=False)
            + _rows("full", "none", {1e-5: (250, 31), 3e-5: (280, 30)}, pad=False)          # best at the bottom
            + _rows("sara", "50M", {1e-4: (900, 20), 1e-3: (300, 30), 3e-3: (500, 25)}))    # inside: done
    _, scores = select_learning_rates(rows)
    assert sorted(widen(scores)) == [("tiny", "full", "none", pytest.approx(3e-6)),
                                     ("tiny", "lora", "50M", pytest.approx(1e-2))]
    with open(tmp_path / "r.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["experiment", "variant", "backbone", "method", "budget", "lr", "seed", "fid", "clip_score"])
        w.writeheader()
        for r in rows:
            w.writerow({"experiment": "lr_search", "variant": f"lr{r['lr']}", **r})
        w.writerow({"experiment": "lr_search", "variant": "base", "backbone": "tiny", "method": "full",  # not a rate
                    "budget": "none", "lr": 1.0, "seed": 0, "fid": 1.0, "clip_score": 99.0})
    assert lr_table.main(["--results", str(tmp_path / "r.csv"), "--out", str(tmp_path / "o"), "--next"]) == []
    assert not (tmp_path / "o").exists()  # --next writes nothing
    assert sorted(capsys.readouterr().out.splitlines()) == [
        "+experiment=lr_search method=full budget=none train.lr=3e-06",
        "+experiment=lr_search method=lora budget=50M train.lr=0.01"]
