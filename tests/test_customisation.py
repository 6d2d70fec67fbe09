"""Customisation (paper Table 7): subjects, identifier, prior-preservation batches, Textual
Inversion (one row trained, diffusers-loadable embedding), VLHI of Table 7, bad inputs."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sara.data import subjects as S
from sara.data.folder import DatasetError


@pytest.fixture(scope="module")
def subject_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("subjects")
    S.write_subjects(root, seed=0)
    return root


def _tiny():
    from sara.backbones import load_backbone

    return load_backbone({"kind": "tiny", "name": "tiny", "resolution": 32,
                          "sampling": {"sampler": "DPMSolverMultistepScheduler", "steps": 4, "guidance_scale": 4.0}})


# --- subjects and identifier ------------------------------------------------------------------------
def test_subjects_layout_and_determinism(subject_root, tmp_path):
    for name in S.SUBJECT_NAMES:
        files = S.subject_images(subject_root / name)
        assert 4 <= len(files) <= 6
        assert S.read_class_noun(subject_root / name) == S.SUBJECTS[name].class_noun
    again = tmp_path / "again"
    S.write_subjects(again, seed=0)
    for name in S.SUBJECT_NAMES:
        for f in S.subject_images(subject_root / name):
            assert (again / name / f.name).read_bytes() == f.read_bytes()
    other = S.write_subjects(tmp_path / "other", seed=1)["striped_circle"]
    assert (other / "00.png").read_bytes() != (subject_root / "striped_circle" / "00.png").read_bytes()


def test_identifier_is_one_unused_token():
    from transformers import CLIPTokenizer

    from sara.backbones.tiny import TINY_ROOT
    from sara.data.domain import PretrainDomain

    tok = CLIPTokenizer.from_pretrained(str(TINY_ROOT / "tokenizer"))
    sid = S.check_identifier(tok, S.IDENTIFIER)
    ids = tok(S.instance_prompt(S.IDENTIFIER, "circle"), add_special_tokens=False)["input_ids"]
    assert ids[1] == sid and len(ids) == 3
    with pytest.raises(ValueError, match="split into"):
        S.check_identifier(tok, "zqxv")
    ds = PretrainDomain(32, split="train", seed=0)  # the pre-training captions never use it
    assert not any(S.IDENTIFIER in ds[i]["prompt"].split() for i in range(300))


def test_detector_tells_subjects_apart(subject_root):
    from PIL import Image

    from sara.data.procedural import render, sample_scene, scene_rng

    for name in S.SUBJECT_NAMES:
        for f in S.subject_images(subject_root / name):
            img = np.asarray(Image.open(f).convert("RGB").resize((32, 32), Image.BOX))
            found = [S.detect_subject(img, s)["present"] for s in S.SUBJECTS.values()]
            assert found == [n == name for n in S.SUBJECT_NAMES], (f, found)
    for i in range(100):  # the domain's flat objects are never a subject
        img = render(sample_scene(scene_rng(0, 0, i)), 32)
        assert not any(S.detect_subject(img, s)["present"] for s in S.SUBJECTS.values())


def test_detector_finds_the_pattern_in_drifted_colours_and_nothing_else():
    """Generated subjects keep their pattern while their colours drift: the detector finds
    renders with both colours moved by 60 (RGB), never another subject or the domain's scenes,
    and rarely the subject's shape and colours drawn with another pattern."""
    res = S.validate_detector(n=12)
    assert res["found_min"] >= 0.9 and res["false_max"] <= 0.05, res
    for r in res["per_subject"].values():
        assert r["found_colour_shifted"] >= 0.9 and r["false_other_subjects"] == r["false_domain_scenes"] == 0.0, res
    spec = S.SUBJECTS["twotone_square"]
    img = S.heldout_subject_image("twotone_square", 0, 0, 32)
    assert S.detect_subject(img, spec)["present"]
    swapped = S.render_subject(dataclasses.replace(spec, colour_a=spec.colour_b, colour_b=spec.colour_a),
                               np.random.default_rng(0), 32)
    assert not S.detect_subject(swapped, spec)["present"]  # teal left, magenta right: not the subject


def _finished_custom_run(root, subject="striped_circle", shown=True):
    """A customisation run directory as a run leaves it: samples + prompts.jsonl + result.json
    (the subject's renders for its prompts when ``shown``, blank canvases for the class prompts)."""
    from sara.customisation import eval_prompts
    from sara.sample import PROMPTS_FILE

    spec = S.SUBJECTS[subject]
    rows = eval_prompts("sks", spec.class_noun, 2, 3)
    samples = root / "samples"
    samples.mkdir(parents=True)
    lines = []
    for i, r in enumerate(rows):
        img = (S.heldout_subject_image(subject, i, 0, 32) if shown and r["kind"] != "class"
               else np.full((32, 32, 3), 200, np.uint8))
        Image.fromarray(img).save(samples / f"{i:05d}.png")
        lines.append(json.dumps({"file_name": f"{i:05d}.png", "text": r["text"]}))
    (samples / PROMPTS_FILE).write_text("\n".join(lines) + "\n")
    rec = {"dataset": subject, "status": "complete",
           "metrics": {"clip_i": 0.5, "subject_fidelity": 0.0, "subject_score": 0.0, "language_drift": 0.0},
           "eval_info": {"identifier": "sks", "class_noun": spec.class_noun, "eval_seeds": 2},
           "config": {"custom": {"drift_samples": 3}, "eval": {"metrics": ["clip_i", "subject_fidelity",
                                                                       "language_drift"]}}}
    (root / "result.json").write_text(json.dumps(rec))
    return root


def test_ground_truth_rescores_a_finished_run(tmp_path, capsys):
    from sara.customisation_checks import main, rescore_ground_truth

    run = _finished_custom_run(tmp_path / "run")
    out = rescore_ground_truth(run)
    rec = json.loads((run / "result.json").read_text())
    assert out["subject_fidelity"] > 0.8 and out["language_drift"] == 0.0
    assert rec["metrics"]["ground_truth"] == S.GROUND_TRUTH and rec["metrics"]["clip_i"] == 0.5
    assert rec["metrics"]["ground_truth_previous"] == {"subject_fidelity": 0.0, "subject_score": 0.0,
                                                       "language_drift": 0.0, "ground_truth": "colour-1"}
    rescore_ground_truth(run)  # again: the first previous values stay
    assert json.loads((run / "result.json").read_text())["metrics"]["ground_truth_previous"]["ground_truth"] == "colour-1"
    other = _finished_custom_run(tmp_path / "other", "twotone_square")
    (other / "samples" / "prompts.jsonl").write_text((run / "samples" / "prompts.jsonl").read_text())
    style = tmp_path / "style_run"
    style.mkdir()
    (style / "result.json").write_text(json.dumps({"dataset": "Cyberpunk", "metrics": {"fid": 1.0}}))
    assert main(["ground-truth", str(other), str(tmp_path / "missing"), str(style)]) == 1
    err = capsys.readouterr().err
    assert "not this run's evaluation prompts" in err and "no result.json" in err and "Traceback" not in err
    assert "not a customisation run on an embedded subject" in err


def test_table7_ignores_fidelity_of_another_ground_truth():
    import pandas as pd

    from analysis.table7_custom import current_ground_truth

    df = pd.DataFrame({"subject_fidelity": [0.5, 0.4, 0.3], "language_drift": [0.1, 0.1, 0.1], "clip_i": [1.0] * 3,
                       "ground_truth": [S.GROUND_TRUTH, "colour-1", np.nan]})
    out = current_ground_truth(df)
    assert out["subject_fidelity"].tolist()[0] == 0.5 and out["subject_fidelity"].iloc[1:].isna().all()
    assert out["language_drift"].iloc[1:].isna().all() and out["clip_i"].tolist() == [1.0] * 3


def test_bad_subject_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "class_noun.txt").write_text("dog\n")
    with pytest.raises(DatasetError, match="holds no images"):
        S.SubjectDataset(empty, 32)
    nonoun = tmp_path / "nonoun"
    nonoun.mkdir()
    (nonoun / "00.png").write_bytes(S.png_bytes(S.subject_image("striped_circle", 0)))
    with pytest.raises(DatasetError, match="no class noun"):
        S.SubjectDataset(nonoun, 32)
    with pytest.raises(DatasetError, match="not found"):
        S.SubjectDataset(tmp_path / "missing", 32)
    # DreamBooth's own prompts_and_classes.txt, or the config, give the noun
    (tmp_path / S.DREAMBOOTH_CLASSES).write_text("Classes\nsubject_name,class\nnonoun,backpack\n")
    assert S.SubjectDataset(nonoun, 32).prompt == "a sks backpack"
    assert S.SubjectDataset(nonoun, 32, class_noun="clock").prompt == "a sks clock"


def test_custom_config_errors():
    from sara.customisation import CustomConfig, CustomisationError

    with pytest.raises(CustomisationError, match="custom.prior_weight: unknown key"):
        CustomConfig.from_mapping({"prior_weight": 1})
    with pytest.raises(CustomisationError, match="custom.identifier"):
        CustomConfig(identifier="two words")
    with pytest.raises(CustomisationError, match="custom.num_class_images"):
        CustomConfig(num_class_images=0)


def test_methods_run_customisation_at_their_own_settings():
    """conf/experiment_method/custom/<method>.yaml: full fine-tuning's own DreamBooth settings
    apply under +experiment=custom only; the PEFT rows keep Eq. 12's rate; the command line wins."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf"
    own = OmegaConf.load(conf / "experiment_method" / "custom" / "full.yaml")

    def cfg(*overrides):
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    full = cfg("+experiment=custom", "method=full", "budget=none")
    for key in ("train.lr", "train.steps", "custom.prior_loss_weight"):
        if OmegaConf.select(own, key) is not None:
            assert OmegaConf.select(full, key) == OmegaConf.select(own, key), key
    assert cfg("+experiment=custom", "method=sara").train.lr == "eq12"
    assert cfg("+experiment=custom", "method=full", "budget=none", "train.lr=0.001").train.lr == 0.001
    assert cfg("method=full").train.lr is None  # outside the experiment: untouched


def test_eval_prompts():
    from sara.customisation import eval_prompts

    rows = eval_prompts("sks", "circle", seeds=3, drift=5)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("recontext") == 12 and kinds.count("property") == 9 and kinds.count("class") == 5
    for r in rows:
        assert "sks" not in r["content"]
        assert ("sks circle" in r["text"]) == (r["kind"] != "class")
    assert all("circle" not in r["text"].replace("sks circle", "") for r in rows if r["kind"] == "recontext")


# --- prior preservation -----------------------------------------------------------------------------
class _RecordingBackbone:
    def __init__(self):
        self.calls = []

    def training_loss(self, module, batch, generator=None):
        self.calls.append((batch["pixel_values"].shape[0], list(batch["prompts"])))
        return batch["pixel_values"].float().mean() * 0 + float(len(self.calls))


class _ClassImages:
    def __len__(self):
        return 7

    def __getitem__(self, i):
        return {"pixel_values": torch.full((3, 8, 8), float(i)), "prompt": "a circle"}


def test_prior_preservation_batches(subject_root):
    from sara.customisation import CustomConfig, Customisation

    bb = _RecordingBackbone()
    ds = S.SubjectDataset(subject_root / "striped_circle", 8)
    c = Customisation(CustomConfig(prior_loss_weight=1.0), bb, subject_root / "striped_circle", ds, "sks",
                      class_dataset=_ClassImages(), spec=S.SUBJECTS["striped_circle"])
    from sara.data import collate

    batch = collate([ds[i] for i in range(3)])
    loss = c.training_loss(None, batch, torch.Generator().manual_seed(5))
    assert bb.calls == [(3, ["a sks circle"] * 3), (3, ["a circle"] * 3)]
    assert float(loss) == 1.0 + 1.0 * 2.0  # instance loss + weight x prior loss
    # the class batch is a pure function of the step's generator (resume-exact)
    a = c.class_batch(4, torch.Generator().manual_seed(11))["pixel_values"]
    b = c.class_batch(4, torch.Generator().manual_seed(11))["pixel_values"]
    assert torch.equal(a, b)
    c.class_dataset = None  # without prior preservation: the instance loss only
    bb.calls.clear()
    c.training_loss(None, batch, None)
    assert len(bb.calls) == 1


# --- class prompts and the class-image cache ---------------------------------------------------------
def test_described_class_prompts_speak_the_captions_language():
    from sara.data.procedural import COLOUR_NAMES, parse_caption

    p = S.described_class_prompts("circle", 32, seed=0)
    assert len(p) == 32 and p == S.described_class_prompts("circle", 32, seed=0)
    assert p != S.described_class_prompts("circle", 32, seed=1)
    assert len(set(p[:14])) == 14 and len(set(p[14:28])) == 14  # every size x colour pair once a round
    for text in p:
        (obj,) = parse_caption(text)
        assert obj["shape"] == "circle" and obj["size"] in ("small", "large") and obj["colour"] in COLOUR_NAMES


def test_class_prompt_modes():
    from types import SimpleNamespace

    from sara.customisation import CustomConfig, CustomisationError, class_prompts

    tiny, sd = SimpleNamespace(resolution=32), SimpleNamespace(resolution=512)
    assert class_prompts("auto", tiny, "circle", 3, 0) == S.described_class_prompts("circle", 3, 0)
    assert class_prompts("auto", tiny, "dog", 3, 0) == ["a dog"] * 3  # not a class of the domain
    assert class_prompts("auto", sd, "circle", 2, 0) == ["a circle"] * 2
    assert class_prompts("plain", tiny, "circle", 2, 0) == ["a circle"] * 2
    assert class_prompts("described", sd, "dog", 1, 0) == S.described_class_prompts("dog", 1, 0)
    assert CustomConfig().class_prompt == "auto"
    with pytest.raises(CustomisationError, match="custom.class_prompt must be one of auto, plain, described"):
        CustomConfig(class_prompt="fancy")


def test_blank_rule():
    from sara.data.procedural import BACKGROUND

    canvas = np.zeros((32, 32, 3), np.uint8) + np.array(BACKGROUND, np.uint8)
    assert S.is_blank(canvas)
    assert not S.is_blank(S.subject_image("striped_circle", 3, size=32))
    dot, small = canvas.copy(), canvas.copy()
    dot[10:14, 10:14] = (220, 40, 40)  # 16 of 1,024 pixels (1.6%): below any object of the domain
    small[10:16, 10:16] = (220, 40, 40)  # 36 pixels (3.5%): as much as a small triangle
    assert S.is_blank(dot) and not S.is_blank(small)


def test_class_image_cache_key_follows_prompts_and_weights_not_the_path(tmp_path):
    from sara.customisation import class_images_dir

    bb = _tiny()
    a = class_images_dir(tmp_path, bb, "circle", ["a circle"] * 4, 0)
    assert class_images_dir(tmp_path, bb, "circle", ["a large red circle"] * 4, 0) != a  # prompts
    assert class_images_dir(tmp_path, bb, "circle", ["a circle"] * 4, 1) != a  # seed
    bb.source, bb.cfg["pretrained"] = "/another/checkout/sara/zoo/tiny", "/another/checkout/sara/zoo/tiny"
    assert class_images_dir(tmp_path, bb, "circle", ["a circle"] * 4, 0) == a  # where the weights lie: no
    with torch.no_grad():
        next(bb.denoiser.parameters()).view(-1)[0] += 1.0
    assert class_images_dir(tmp_path, bb, "circle", ["a circle"] * 4, 0) != a  # other weights


def test_class_images_are_generated_from_their_prompts_and_reused(tmp_path):
    from sara.customisation import class_image_report, ensure_class_images

    bb = _tiny()
    prompts = S.described_class_prompts("square", 3, 0)
    folder = ensure_class_images(bb, "square", prompts, 0, tmp_path, batch_size=3)
    texts = [json.loads(x)["text"] for x in (folder / "metadata.jsonl").read_text().splitlines()]
    assert texts == prompts
    stamp = (folder / "0000.png").stat().st_mtime_ns
    assert ensure_class_images(bb, "square", prompts, 0, tmp_path) == folder
    assert (folder / "0000.png").stat().st_mtime_ns == stamp  # cached, not regenerated
    rep = class_image_report(folder, "square")
    assert rep["n"] == 3 and 0 <= rep["blank"] <= 3 and 0 <= rep["shows_class"] <= 3


# --- Textual Inversion ------------------------------------------------------------------------------
def _apply_ti(bb, tmp_path):
    from sara.methods.base import PrepareContext
    from sara.methods.textual_inversion import TextualInversion

    m = TextualInversion(placeholder_token="<sks>", lr=5e-2)
    ctx = PrepareContext(seed=0, extra={"backbone": bb, "run_dir": tmp_path, "class_noun": "circle"})
    module = m.apply(bb.denoiser, budget=None, ctx=ctx)
    return m, module


def test_textual_inversion_trains_one_row_only(subject_root, tmp_path):
    from sara.data import collate

    bb = _tiny()
    te_before = {k: v.detach().clone() for k, v in bb.text_encoder.state_dict().items()}
    unet_before = {k: v.detach().clone() for k, v in bb.denoiser.state_dict().items()}
    emb_before = bb.text_encoder.get_input_embeddings().weight.detach().clone()
    m, module = _apply_ti(bb, tmp_path)
    assert m.num_trainable() == emb_before.shape[1]
    opt = m.make_optimizer(lr=None)
    ds = S.SubjectDataset(subject_root / "striped_circle", 32, identifier="<sks>")
    assert ds.prompt == "a <sks> circle"
    batch = collate([ds[i] for i in range(4)])
    for step in range(3):
        loss = bb.training_loss(module, batch, torch.Generator().manual_seed(step))
        loss.backward()
        opt.step()
        opt.zero_grad()
    m.on_step_end(3, 3)
    module = m.merged(module)
    emb = bb.text_encoder.get_input_embeddings().weight
    n_old = emb_before.shape[0]
    assert emb.shape[0] == n_old + 1 and m.token_id == n_old
    assert torch.equal(emb[:n_old], emb_before)  # every other row bit-identical
    init = emb_before[bb.tokenizer("circle", add_special_tokens=False)["input_ids"]].mean(0)
    assert not torch.equal(emb[n_old], init)  # the new row trained
    for k, v in bb.text_encoder.state_dict().items():
        if "token_embedding" not in k:
            assert torch.equal(v, te_before[k]), k
    for k, v in bb.denoiser.state_dict().items():
        assert torch.equal(v, unet_before[k]), k
    assert (tmp_path / "learned_embeds.safetensors").is_file()


def test_learned_embeds_load_with_diffusers(tmp_path):
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from safetensors.torch import load_file

    bb = _tiny()
    m, module = _apply_ti(bb, tmp_path)
    with torch.no_grad():
        m.embedding.row.add_(0.5)
    path = m.save_learned_embeds(tmp_path / "learned_embeds.safetensors")
    assert list(load_file(str(path))) == ["<sks>"]
    m.merged(module)
    mine = bb.encode_prompt(["a <sks> circle"])

    fresh = _tiny()  # an untouched copy, loaded into a diffusers pipeline
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=3, sample_size=32)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=fresh.text_encoder, tokenizer=fresh.tokenizer,
                                   unet=fresh.denoiser, scheduler=fresh.noise_scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.load_textual_inversion(str(tmp_path), weight_name="learned_embeds.safetensors")
    assert pipe.tokenizer.convert_tokens_to_ids("<sks>") == m.token_id
    row = pipe.text_encoder.get_input_embeddings().weight[m.token_id]
    assert torch.equal(row, m.embedding.row.detach())
    theirs = fresh.encode_prompt(["a <sks> circle"])
    key = next(k for k, v in mine.items() if torch.is_tensor(v))
    assert torch.allclose(mine[key], theirs[key])


def test_textual_inversion_needs_the_backbone():
    from sara.methods.textual_inversion import TextualInversion

    with pytest.raises(ValueError, match="ctx.extra"):
        TextualInversion().apply(torch.nn.Linear(2, 2), ctx=None)
    with pytest.raises(ValueError, match="one word"):
        TextualInversion(placeholder_token="a b")


# --- metrics ----------------------------------------------------------------------------------------
def test_table7_vlhi_recomputes_all_24_cells():
    from sara.metrics.clip_i_t import reproduce_table7

    w = reproduce_table7()
    assert len(w) == 24 and w["VLHI"].notna().all()
    assert w["abs_err"].max() <= 0.01, w.sort_values("abs_err").tail(3)


def test_vlhi_custom_orders():
    from sara.metrics.clip_i_t import vlhi_custom

    v = vlhi_custom([0.9, 0.8, 0.7], [20.0, 25.0, 30.0])
    np.testing.assert_allclose(v, [1.0, 1.0, 1.0])
    v = vlhi_custom([0.9, 0.7], [30.0, 20.0])
    np.testing.assert_allclose(v, [2.0, 0.0])


def test_check_weights_one_line(monkeypatch, tmp_path):
    from sara.customisation_checks import check_weights

    monkeypatch.setenv("SARA_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.delenv("SARA_CLIP_PATH", raising=False)
    msg = check_weights("tiny", "real")
    assert msg is not None and "\n" not in msg and "ViT-L" in msg


# --- end to end (run.py) ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", ["sara", "textual_inversion"])
def test_run_custom_smoke(method, tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "run.py", "+experiment=custom", "train=smoke", f"method={method}",
           f"output_root={tmp_path}", f"data.root={tmp_path / 'subjects'}", "torch_threads=1",
           "custom.num_class_images=8"]
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    rec = json.loads(next(tmp_path.rglob("result.json")).read_text())
    assert rec["status"] == "complete"
    for k in ("clip_i", "clip_t", "subject_fidelity", "language_drift"):
        assert isinstance(rec["metrics"][k], float), k


@pytest.mark.slow
def test_clip_i_tells_the_subjects_apart():
    from sara.customisation_checks import validate_clip_i

    res = validate_clip_i(n_per_subject=30)
    assert res["share_correct"] >= 0.95, res


def _table7_rows(base_fidelity: float = 0.0) -> list[dict]:
    """A results table's customisation rows: six rows x three subjects and the pre-trained runs."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for subject in ("striped_circle", "twotone_square", "dotted_diamond"):
        for method, ci, ct in (("textual_inversion", 0.5, 50), ("full", 0.6, 40), ("lora", 0.9, 30),
                               ("adaptformer", 0.55, 45), ("lt_sft", 0.55, 44), ("sara", 0.7, 60)):
            rows.append({"experiment": "custom", "variant": "", "dataset": subject, "method": method, "seed": 0,
                         "clip_i": ci + rng.normal(0, 0.01), "clip_i_se": 0.01, "clip_t": ct + rng.normal(0, 0.5),
                         "clip_t_se": 0.5, "subject_fidelity": 0.5, "language_drift": 0.1, "n_images": 20,
                         "ground_truth": S.GROUND_TRUTH,
                         "n_class_images": 10, "steps": 300 if method == "full" else 100,
                         "lr": 2e-4 if method == "full" else "eq12" if method == "textual_inversion" else 4e-4,
                         "config.method.lr": 5e-3 if method == "textual_inversion" else 1e-4,
                         "config.custom.prior_loss_weight": 0.5 if method == "full" else 1.0,
                         "eval_info.prior_preservation": method != "textual_inversion",
                         "wall_time_s": 60.0 if subject == "dotted_diamond" else 40.0})
        rows.append({"experiment": "custom", "variant": "base", "dataset": subject, "method": "full", "seed": 0,
                     "clip_i": 0.3, "clip_i_se": 0.01, "clip_t": 61, "clip_t_se": 0.5,
                     "subject_fidelity": base_fidelity, "language_drift": 0.0, "n_images": 20, "n_class_images": 10,
                     "ground_truth": S.GROUND_TRUTH, "steps": 0, "lr": "eq12", "wall_time_s": 20.0})
    return rows


def test_table7_from_a_results_table(tmp_path):
    """Table 7, its ground truth over the subjects and each row's settings come from a results
    table alone (the committed runs.csv); a rerun seed of a cell replaces the older one."""
    import pandas as pd

    from analysis import table7_custom

    rows = _table7_rows()
    rows.append({**rows[0], "seed": 1, "subject_fidelity": 0.25})  # TI on striped_circle, a later seed
    rows.append({**rows[1], "variant": "steps900", "seed": 5, "subject_fidelity": 1.0})  # a probe: not a cell
    table = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    table7_custom.main(["--results", str(table), "--out", str(tmp_path / "o")])
    md = (tmp_path / "o" / "table7.md").read_text()
    line = lambda label, section: next(ln for ln in md.split(section)[1].splitlines() if ln.startswith(f"| {label} |"))
    assert "| 3 | 0.50 (30 of 60) | 0.10 (3 of 30) |" in line("DreamBooth + Full", "Over the subjects")
    assert "0.42 (25 of 60)" in line("Textual Inversion", "Over the subjects")  # seed 1 replaced seed 0
    full = line("DreamBooth + Full", "Settings")
    assert "| 0.0002 | 300 | 0.5 | 40–60 |" in full
    ti = line("Textual Inversion", "Settings")
    assert "| 0.005 | 100 | – |" in ti  # the method's own rate; no prior preservation
    assert (tmp_path / "o" / "table7_claims.md").read_text().count("| custom-") == 6
    assert not (tmp_path / "o" / "fig14_custom.png").exists()  # no --root: no samples to show


def test_custom_settings_compare_probes_of_one_row_with_the_pre_trained(tmp_path):
    import pandas as pd

    from analysis import custom_settings

    rows = [r for r in _table7_rows(base_fidelity=0.05) if r["method"] == "full"]
    for r in rows:
        r["config.custom.prior_loss_weight"] = 0.5 if r["variant"] == "" else 0.1
    probe = [{**r, "variant": "w0", "config.custom.prior_loss_weight": 0.0, "subject_fidelity": 0.9}
             for r in rows if r["variant"] == ""]
    table = tmp_path / "runs.csv"
    pd.DataFrame(rows + probe + [{**probe[0], "method": "lora", "variant": "w0"}]).to_csv(table, index=False)
    custom_settings.main(["--results", str(table), "--out", str(tmp_path / "o")])
    t = pd.read_csv(tmp_path / "o" / "custom_settings.csv").set_index("setting")
    assert list(t.index) == ["the experiment's own", "pre-trained", "w0"]  # the LoRA probe is not full's
    assert t.at["w0", "k"] == 54 and t.at["w0", "n"] == 60 and str(t.at["w0", "prior_loss_weight"]) in ("0", "0.0")
    assert t.at["pre-trained", "fidelity"] == pytest.approx(0.05)
    md = (tmp_path / "o" / "custom_settings.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| w0 |"))
    se = (0.9 * 0.1 / 60 + 0.05 * 0.95 / 60) ** 0.5
    assert "0.90 (54 of 60)" in line and f"{(0.9 - 0.05) / se:+.1f}" in line


def test_app_d_claims_join_the_claims_report_from_a_results_table():
    """C31–C36 are judged on the customisation rows of a results table (subject = dataset, the
    pre-trained rows are the `base` variant); without such rows they are not run."""
    import pandas as pd

    from analysis import table7_custom

    res = {r["id"]: r for r in table7_custom.claims(pd.DataFrame(_table7_rows()))}
    assert sorted(res) == [f"C{i}" for i in range(31, 37)]
    assert res["C31"]["verdict"] == "reproduced"            # LoRA: best CLIP-I, worst CLIP-T
    assert res["C33"]["verdict"] == "reproduced"            # SaRA: best CLIP-T
    assert all(r["paper_quote"] for r in res.values())
    empty = table7_custom.claims(pd.DataFrame(columns=["experiment", "dataset", "method"]))
    assert {r["verdict"] for r in empty} == {"not_run"}
