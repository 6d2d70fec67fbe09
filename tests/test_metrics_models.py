"""Real-model metric paths, offline: tiny randomly initialised open_clip CLIP and transformers
BLIP-VQA models of the real classes, saved to a temp dir and loaded through the real loaders;
noun phrases; missing-weights messages."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sara.metrics.bvqa import BlipVQA, bvqa, bvqa_scores, load_vqa, noun_phrases
from sara.metrics.clip_i_t import clip_i, clip_t
from sara.metrics.clip_score import clip_score, clip_scores, load_clip
from sara.metrics.weights import MissingWeightsError


def _images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_openclip_dir(tmp_path_factory):
    """An open_clip local-dir (the layout of timm/vit_large_patch14_clip_224.openai) of a tiny CLIP
    with OpenAI's BPE tokenizer and normalisation."""
    import open_clip
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("clip")
    cfg = {
        "model_cfg": {
            "embed_dim": 16, "quick_gelu": True,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    m = open_clip.create_model(f"local-dir:{d}")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    return d


def test_real_clip_path_loads_and_scores(tiny_openclip_dir):
    import open_clip

    clip = load_clip("real", weights=tiny_openclip_dir)
    assert isinstance(clip.tokenizer, open_clip.tokenizer.SimpleTokenizer)  # OpenAI BPE, bundled
    ims = _images(3, size=48)
    texts = ["a photo of a dog", "a red circle", "Cyberpunk style, a small blue square"]
    s = clip_scores(ims, texts, clip)
    # independent computation: encode by hand with open_clip's own transforms and tokenizer
    model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{tiny_openclip_dir}")
    model.eval()
    with torch.no_grad():
        fi = model.encode_image(torch.stack([pre(i) for i in ims]))
        ft = model.encode_text(open_clip.get_tokenizer(f"local-dir:{tiny_openclip_dir}")(texts))
    ref = 100 * torch.nn.functional.cosine_similarity(fi, ft).numpy()
    np.testing.assert_allclose(s, ref, rtol=1e-4, atol=1e-4)
    assert clip_score(ims, texts, clip) == pytest.approx(float(ref.mean()), abs=1e-4)
    assert clip_t(ims, texts, clip) == pytest.approx(float(ref.mean()), abs=1e-4)
    ci = clip_i(ims, ims, clip)
    assert -1 <= ci <= 1
    with pytest.raises(ValueError, match="3 images but 2 texts"):
        clip_scores(ims, texts[:2], clip)


def test_real_clip_env_var_location(tiny_openclip_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("SARA_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("SARA_CLIP_PATH", str(tiny_openclip_dir))
    assert load_clip("real").source == str(tiny_openclip_dir)


@pytest.fixture(scope="module")
def tiny_blip_dir(tmp_path_factory):
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    d = tmp_path_factory.mktemp("blip")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "yes", "no", "a", "small", "large", "red",
             "blue", "circle", "square", "?"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                         tokenizer=BertTokenizer(str(d / "vocab.txt")))
    cfg = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, encoder_hidden_size=32, bos_token_id=5, pad_token_id=0,
                         sep_token_id=3, max_position_embeddings=64),
    )
    torch.manual_seed(0)
    BlipForQuestionAnswering(cfg).save_pretrained(str(d))
    proc.save_pretrained(str(d))
    return d


def test_real_blip_vqa_path(tiny_blip_dir):
    vqa = load_vqa("real", weights=tiny_blip_dir)
    assert isinstance(vqa, BlipVQA)
    ims = _images(2)
    qs = ["a small red circle?", "a large blue square?"]  # same length: no padding
    p = vqa.p_yes(ims, qs)
    assert p.shape == (2,) and np.all((p > 0) & (p < 1))
    # the answer decoder's first step, as transformers' own generate() computes it
    enc = vqa.processor(images=ims, text=qs, return_tensors="pt", padding=True)
    out = vqa.model.generate(**enc, max_new_tokens=1, output_logits=True, return_dict_in_generate=True)
    pr = torch.softmax(out.logits[0].float(), -1)
    ref = (pr[:, vqa.yes_id] / (pr[:, vqa.yes_id] + pr[:, vqa.no_id])).numpy()
    np.testing.assert_allclose(p, ref, rtol=1e-5, atol=1e-6)
    # B-VQA: product over noun phrases per image
    prompts = ["a small red circle above a large blue square", "a large blue square"]
    s = bvqa_scores(ims, prompts, vqa)
    p1 = vqa.p_yes([ims[0], ims[0]], ["a small red circle?", "a large blue square?"])
    assert s[0] == pytest.approx(float(p1[0] * p1[1]), rel=1e-5)
    assert bvqa(ims, prompts, vqa) == pytest.approx(float(s.mean()))


def test_noun_phrases():
    assert noun_phrases("Cyberpunk style, a small red circle above a large blue square and a small cyan cross") == [
        "a small red circle", "a large blue square", "a small cyan cross"]
    assert noun_phrases("a red circle") == ["a red circle"]
    got = noun_phrases("a green bench and a red car on the street", use_spacy=False)
    assert got == ["a green bench", "a red car", "the street"]


@pytest.mark.parametrize("kind, key, env, model_id", [
    ("clip", "eval.clip_score.weights", "SARA_CLIP_PATH", "timm/vit_large_patch14_clip_224.openai"),
    ("bvqa", "eval.bvqa.weights", "SARA_BLIP_VQA_PATH", "Salesforce/blip-vqa-base"),
])
def test_missing_real_weights_messages(kind, key, env, model_id, monkeypatch, tmp_path):
    monkeypatch.setenv("SARA_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(MissingWeightsError) as e:
        load_clip("real") if kind == "clip" else load_vqa("real")
    msg = str(e.value)
    for part in (model_id, key, env, str(tmp_path / "weights"), "huggingface-cli download"):
        assert part in msg, (part, msg)
    # an explicit path that does not exist is named too
    with pytest.raises(MissingWeightsError, match="nope"):
        load_clip("real", weights=tmp_path / "nope") if kind == "clip" else load_vqa("real", weights=tmp_path / "nope")


def test_missing_embedded_zoo_message(tmp_path):
    with pytest.raises(MissingWeightsError, match="train_evaluators.py"):
        load_clip("embedded", weights=tmp_path)
    with pytest.raises(MissingWeightsError, match="attr_vqa.safetensors"):
        load_vqa("embedded", weights=tmp_path)
