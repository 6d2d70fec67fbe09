#!/usr/bin/env python
"""Memory and speed benchmark at Stable Diffusion scale (paper Fig. 5, App. I).

Peak memory and step time of one training step (forward + backward + optimizer step + zero_grad)
of a randomly initialised Stable Diffusion denoiser, per fine-tuning method, batch size and
resolution. Memory and step time depend on the architecture and the tensor sizes, not on the
weight values, so no download is needed: the UNet is built from its config
(``sara.backbones.build_denoiser_from_config``) and fed random latents (``resolution / 8`` per
side, 4 channels), random timesteps and random text embeddings (77 tokens x
``cross_attention_dim``); no VAE or text encoder is involved.

Example::

    python benchmarks/memory_speed.py --arch sd15 --device cpu --resolution 256 --batch-sizes 1,4 \
        --budget 50M --methods full,lt_sft,lt_sft_ub,lora,lora_dropout,sara,sara_naive --json OUT

Methods (``--methods``):

``full``          every weight, AdamW (``conf/method/full.yaml``)
``lt_sft``        LT-SFT phase 2 with classical dense-gradient masking (``unstructural: false``)
``lt_sft_ub``     LT-SFT phase 2 with SaRA's unstructural backpropagation (``unstructural: true``)
``lora``          LoRA through peft, dropout 0;  ``lora_dropout``: the same with dropout 0.1
``sara``          the suite's SaRA (``conf/method/sara.yaml``: sara.core, sparse leaf ``values``)
``sara_naive``    the naive implementation, built here: boolean masks the size of the whole model,
                  dense gradients of every touched tensor masked in place, AdamW with full-size
                  moments over the touched tensors (what the authors' public optimizer does)
any other name    ``conf/method/<name>.yaml`` as it stands (e.g. ``sara_no_rank``)

References always measured (``--references``):

``floor``         the same model's forward + backward with every weight frozen and
                  ``requires_grad`` on the input latents only (what autograd needs for input
                  gradients). A method's ``floor_bytes`` is this peak + 4 x trained entries x
                  bytes per entry (value, gradient, two Adam moments) + index bytes (int32 flat
                  indices, 4 bytes per entry, for the selective methods; 0 for full and LoRA).
``floor_wgrad``   forward + backward with every weight requiring grad, each dense gradient freed
                  by a post-accumulate-grad hook as soon as it is complete: the activations that
                  weight gradients need, without any gradient kept. Not used in the targets; it
                  separates "activations a weight-gradient method must save" from overhead.

Measurement: each method runs in a FRESH subprocess that builds the model, applies the method
once and then runs every (resolution, batch size) in increasing order. Before each batch size the
peak is reset: CPU: the process's peak resident set size (VmHWM), reset through
``/proc/self/clear_refs`` after ``malloc_trim`` (so one-off set-up transients such as budget
solving are reported separately as ``setup_peak_bytes``); CUDA: ``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats``. ``--fresh-process per-batch`` uses one subprocess per
(method, resolution, batch size) instead; ``--fresh-process none`` runs every method in the calling
process (for tests and debugging only: no isolation, so CPU peaks include what earlier methods
left behind). Step time is the median over ``--steps`` timed steps
after ``--warmup`` untimed ones (CUDA synchronised).
Methods are measured side by side in one run, so compare the printed ratios rather than
absolute times taken on different days or on a shared machine. On a CPU shared with other jobs,
``--threads 1`` gives steadier ratios: with torch's default (one thread per core) every parallel
region waits for whichever of its threads the scheduler has taken away.

The last lines printed are the ratios (method / floor, method / LoRA with dropout 0.1) and
PASS/MISS for each target (T1-T7, docs/benchmark.md).
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: SD 1.5 UNet parameter count: the paper's budgets (5M/20M/50M) are fractions of this model
from sara.budget import REFERENCE_PARAMS  # noqa: E402
RECORD_KEYS = ("method", "batch_size", "resolution", "device", "budget", "trainable", "peak_bytes",
               "step_s", "floor_bytes", "dense_grad_bytes_frozen")
REFERENCES = ("floor", "floor_wgrad")
#: the comparator of the LoRA targets ("LoRA (dropout 0.1)")
LORA_REF = "lora_dropout"
#: bytes of the smallest flat index that can address any entry of one tensor (< 2**31 entries)
INDEX_BYTES_PER_ENTRY = 4
MARK = "@@MEMSPEED@@ "

#: benchmark name -> (conf/method file, overrides of its knobs)
METHOD_CONFS: dict[str, tuple[str, dict]] = {
    "full": ("full", {}),
    "lt_sft": ("lt_sft", {"unstructural": False}),
    "lt_sft_ub": ("lt_sft", {"unstructural": True}),
    "lora": ("lora", {"dropout": 0.0}),
    "lora_dropout": ("lora", {"dropout": 0.1}),
    "sara": ("sara", {}),
}


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def parse_count(text: str | int | float) -> int:
    """``50M`` -> 50_000_000, ``1.5k`` -> 1500, ``123`` -> 123."""
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().upper().replace("_", "").replace(",", "")
    mult = {"K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}
    if s and s[-1] in mult:
        return int(round(float(s[:-1]) * mult[s[-1]]))
    return int(round(float(s)))


def scaled_target(budget: str | int, n_params: int) -> int:
    """The paper's budget as the same share of ``n_params`` as it is of SD 1.5's UNet
    (``sara.budget.budget_target``, so the benchmark and the training runs agree)."""
    try:
        from sara.budget import budget_target
    except ImportError:  # sara.budget not importable: the same formula (SPEC §2)
        return max(1, int(round(parse_count(budget) * n_params / REFERENCE_PARAMS)))
    return int(budget_target(str(budget), n_params))


def fmt_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    return f"{n / 2**30:.2f} GiB"


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------
# memory probes (one per device kind)
# ------------------------------------------------------------------------------------------------
class Probe:
    def __init__(self, device: str):
        import torch
        self.torch = torch
        self.cuda = device.startswith("cuda")
        self.device = device

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def current(self) -> int:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            return int(self.torch.cuda.memory_allocated())
        _malloc_trim()
        return int(_proc_status("VmRSS") or 0)

    def peak(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize()
            return int(self.torch.cuda.max_memory_allocated())
        return int(_proc_status("VmHWM") or 0)

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            _malloc_trim()
            _reset_cpu_peak()


# ------------------------------------------------------------------------------------------------
# the naive implementation (for comparison with sara.core)
# ------------------------------------------------------------------------------------------------
class NaiveMaskedSelective:
    """Selective fine-tuning the naive way, as the authors' public optimizer does it.

    * a boolean mask the size of every parameter tensor of the model (``|w| < threshold``);
    * every tensor with at least one selected entry requires grad, so autograd builds its dense
      ``.grad``; a post-accumulate-grad hook masks it in place (dense-masked gradient), and it
      stays allocated until ``zero_grad``;
    * ``torch.optim.AdamW`` over those whole tensors: two full-size moments per touched tensor.
      Weight decay is 0 so that frozen entries (zero gradient, zero moments) stay bit-exact.
    """

    def __init__(self, model, threshold: float, lr: float = 1e-4):
        import torch
        self.masks = []
        params = []
        self.trainable = 0
        self.touched_numel = 0
        for p in model.parameters():
            m = p.detach().abs() < threshold
            self.masks.append(m)
            n = int(m.sum())
            if n:
                p.requires_grad_(True)
                p.register_post_accumulate_grad_hook(self._mask_hook(m))
                params.append(p)
                self.trainable += n
                self.touched_numel += p.numel()
            else:
                p.requires_grad_(False)
        self.mask_bytes = sum(m.numel() * m.element_size() for m in self.masks)
        self.threshold = threshold
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)

    @staticmethod
    def _mask_hook(mask):
        def hook(p):
            p.grad.mul_(mask)  # dense gradient, masked in place; kept until zero_grad
        return hook


# ------------------------------------------------------------------------------------------------
# building one method on a model (child side)
# ------------------------------------------------------------------------------------------------
class Prepared:
    """What a child needs to run steps: the module to call, the optimizer, and its accounting."""

    def __init__(self, module, optimizer, trainable: int, touched_numel: int = 0,
                 index_bytes_floor: int = 0, param_bytes: int = 4, input_grad: bool = False,
                 info: dict | None = None):
        self.module = module
        self.optimizer = optimizer
        self.trainable = int(trainable)
        self.touched_numel = int(touched_numel)
        self.index_bytes_floor = int(index_bytes_floor)
        self.param_bytes = int(param_bytes)
        self.input_grad = input_grad
        self.info = info or {}


def _instantiate_method(conf_name: str, overrides: dict):
    """``conf/method/<name>.yaml`` composed by Hydra as ``run.py`` does (``sara.budget``), with
    knob overrides. Where Hydra is not installed (the GPU machine), the same file is composed
    here: its ``defaults`` list of sibling method configs, then its own keys."""
    try:
        from sara.budget import instantiate_method, method_config
        import hydra  # noqa: F401
    except ImportError:
        return _instantiate_without_hydra(conf_name, overrides)
    cfg = method_config(conf_name)
    return instantiate_method(conf_name, **overrides), str(cfg.get("_target_"))


def _compose_yaml(conf_name: str, seen=()) -> dict:
    import yaml
    path = REPO / "conf" / "method" / f"{conf_name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: method {conf_name!r} is not in the suite")
    own = yaml.safe_load(path.read_text()) or {}
    out: dict = {}
    defaults = own.pop("defaults", []) or []
    if "_self_" not in defaults:
        defaults = list(defaults) + ["_self_"]
    for d in defaults:
        if d == "_self_":
            out.update(own)
        elif isinstance(d, str) and d not in seen:
            out.update(_compose_yaml(d.split("/")[-1], seen + (conf_name,)))
    return out


def _instantiate_without_hydra(conf_name: str, overrides: dict):
    import importlib
    conf = _compose_yaml(conf_name)
    conf.update(overrides)
    target = conf.pop("_target_")
    mod_name, cls_name = target.rsplit(".", 1)
    cls = getattr(importlib.import_module(mod_name), cls_name)
    kwargs = {k: v for k, v in conf.items() if not k.startswith("_")}
    return cls(**kwargs), target


def _tensor_bytes(ts) -> int:
    return int(sum(t.numel() * t.element_size() for t in ts if t is not None))


def _method_accounting(m, model) -> dict:
    """What a selective method keeps besides the model: touched tensors (for
    ``dense_grad_bytes_frozen``), index / mask / W0-copy bytes (reported, not measured)."""
    params = dict(model.named_parameters())
    sp = getattr(m, "sparse", None)
    if sp is not None:  # sara.core SparseParameters (SaRA, LT-SFT unstructural)
        names = [n for n in sp.names if sp.count(n) > 0]
        return {"touched_numel": sum(params[n].numel() for n in names),
                "touched_tensors": len(names),
                "index_bytes": _tensor_bytes(sp.indices.values()),
                "initial_bytes": sp.initial_device_bytes,
                "initial_storage": sp.initial_storage,
                "sampled_layers": len(sp.sampled_layers),
                "mask_bytes": _tensor_bytes((sp.dense_masks or {}).values())}
    dense = getattr(m, "_dense", None)
    if dense:  # LT-SFT with dense-gradient masking
        return {"touched_numel": sum(params[n].numel() for n in dense),
                "touched_tensors": len(dense),
                "index_bytes": _tensor_bytes(getattr(m, "_dense_idx", {}).values()),
                "initial_bytes": _tensor_bytes(getattr(m, "_dense_w0", {}).values()),
                "mask_bytes": _tensor_bytes(dense.values())}
    return {"touched_numel": 0}


def _unet_loss(model, batch):
    import torch
    latents, t, text, noise = batch
    out = model(latents, t, encoder_hidden_states=text, return_dict=False)[0]
    return torch.nn.functional.mse_loss(out.float(), noise.float())


def _random_batches(model, batch_size: int, resolution: int, device: str):
    i = 0
    while True:
        yield _inputs(model, batch_size, resolution, device, seed=1000 + i)
        i += 1


def _context(model, device: str, calib_steps: int = 1, total_steps: int = 5000):
    """A PrepareContext: the trainer's length (SaRA's progressive_iter = 0.5 x steps lies beyond
    the benchmark's few steps) and, for calibration phases, random batches of the UNet's loss."""
    from sara.methods.base import PrepareContext
    return PrepareContext(loss_fn=_unet_loss, batches=_random_batches(model, 1, 256, device),
                          steps=total_steps, seed=0, extra={"calibration_steps": calib_steps})


def _random_indices(model, k: int, seed: int = 0) -> dict:
    """``k`` random entries spread over every tensor in proportion to its size (largest-remainder
    quotas, ``randperm`` on the tensor's own device: seconds on a GPU where a model-wide ranking of
    random keys takes minutes on the host). Sorted flat indices, int32 (int64 for huge tensors)."""
    import torch
    named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point() and p.numel()]
    total = sum(p.numel() for _, p in named)
    quota = [k * p.numel() / total for _, p in named]
    counts = [int(q) for q in quota]
    for i in sorted(range(len(named)), key=lambda i: quota[i] - counts[i], reverse=True)[:k - sum(counts)]:
        counts[i] += 1
    out = {}
    for (n, p), c in zip(named, counts):
        if not c:
            continue
        g = torch.Generator(device=p.device).manual_seed(seed + len(out))
        idx = torch.randperm(p.numel(), generator=g, device=p.device)[:c].sort().values
        out[n] = idx.to(torch.int32 if p.numel() < 2**31 else torch.int64)
    return out


def _lt_sft_restore(m, model, target: int):
    """LT-SFT's phase 2 without phase 1: ``target`` random entries spread over every tensor,
    restored with the method's own ``restore`` (no calibration).

    Memory and time depend on how many entries and which tensors hold them, not on their values;
    one AdamW step of phase 1 changes nearly every entry by about lr, so LT-SFT's top-|change|
    selection is spread over every tensor as a random selection is."""
    from sara.core.sparse import read_entries
    params = dict(model.named_parameters())
    state = {}
    for n, idx in _random_indices(model, int(target)).items():
        state[f"indices/{n}"] = idx
        state[f"values/{n}"] = read_entries(params[n], idx).clone()
    m.restore(model, state, budget=int(target))
    return model


def prepare(method: str, model, target: int, device: str, lr: float | None,
            lt_sft_selection: str = "random") -> Prepared:
    p_bytes = next(model.parameters()).element_size()

    if method == "floor":
        for p in model.parameters():
            p.requires_grad_(False)
        return Prepared(model, None, 0, input_grad=True, param_bytes=p_bytes)

    if method == "floor_wgrad":
        for p in model.parameters():
            p.requires_grad_(True)
            p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None))
        return Prepared(model, None, 0, param_bytes=p_bytes)

    if method == "sara_naive":
        from sara.core import threshold_for_budget
        threshold = float(threshold_for_budget(model, int(target)))
        naive = NaiveMaskedSelective(model, threshold, lr=lr or 1e-4)
        return Prepared(model, naive.optimizer, naive.trainable, touched_numel=naive.touched_numel,
                        index_bytes_floor=INDEX_BYTES_PER_ENTRY * naive.trainable, param_bytes=p_bytes,
                        info={"threshold": threshold, "mask_bytes": naive.mask_bytes,
                              "touched_numel": naive.touched_numel})

    conf_name, overrides = METHOD_CONFS.get(method, (method, {}))
    m, target_cls = _instantiate_method(conf_name, overrides)
    if conf_name == "lt_sft" and lt_sft_selection == "random":
        module = _lt_sft_restore(m, model, target)
    else:
        module = m.apply(model, budget=target, ctx=_context(model, device))
    optimizer = m.make_optimizer(lr=lr)
    trainable = int(m.num_trainable())
    acct = _method_accounting(m, model)
    selective = acct["touched_numel"] > 0
    info = {"class": target_cls, "knob": getattr(m, "knob", None),
            "knob_value": _jsonable(getattr(m, "knob_value", None)), **acct}
    if conf_name == "lt_sft":
        info["selection"] = lt_sft_selection
    return Prepared(module, optimizer, trainable, touched_numel=acct["touched_numel"],
                    index_bytes_floor=INDEX_BYTES_PER_ENTRY * trainable if selective else 0,
                    param_bytes=p_bytes, info=info)


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


# ------------------------------------------------------------------------------------------------
# child: build, prepare, measure
# ------------------------------------------------------------------------------------------------
def _inputs(model, batch_size: int, resolution: int, device: str, seed: int = 0):
    import torch
    cfg = model.config
    lat = resolution // 8
    g = torch.Generator(device="cpu").manual_seed(seed)
    latents = torch.randn(batch_size, cfg.in_channels, lat, lat, generator=g).to(device)
    noise = torch.randn(batch_size, cfg.out_channels, lat, lat, generator=g).to(device)
    t = torch.randint(0, 1000, (batch_size,), generator=g).to(device)
    cross = cfg.cross_attention_dim
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    text = torch.randn(batch_size, 77, int(cross), generator=g).to(device)
    return latents, t, text, noise


def _autocast(device: str, dtype: str):
    import contextlib
    import torch
    if dtype == "fp32":
        return contextlib.nullcontext()
    kind = "cuda" if device.startswith("cuda") else "cpu"
    want = {"fp16-autocast": torch.float16, "bf16-autocast": torch.bfloat16}[dtype]
    if kind == "cpu" and want == torch.float16:
        want = torch.bfloat16  # CPU autocast is bf16
    return torch.autocast(kind, dtype=want)


def _one_step(prep: Prepared, inputs, device, dtype):
    import torch
    latents, t, text, noise = inputs
    if prep.input_grad:
        latents = latents.detach().requires_grad_(True)
    with _autocast(device, dtype):
        out = prep.module(latents, t, encoder_hidden_states=text, return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(out.float(), noise.float())
    loss.backward()
    if prep.optimizer is not None:
        prep.optimizer.step()
        prep.optimizer.zero_grad(set_to_none=True)
    del out, loss, latents


def child_main(spec: dict) -> list[dict]:
    import torch

    device = spec["device"]
    in_process = bool(spec.get("in_process"))
    # the same libraries in every child, so the CPU resident baseline is the same for all methods
    # (in-process runs share one baseline anyway: import only what the methods need)
    import importlib
    for mod in (() if in_process else ("peft", "hydra.utils", "sara.budget", "sara.methods", "sara.core")):
        try:
            importlib.import_module(mod)
        except Exception:
            pass
    threads_before = torch.get_num_threads()
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    # the libraries' objects never become garbage: keep them out of the gc.collect() calls made
    # before each measurement (about a second each with torch, diffusers and peft loaded)
    gc.freeze()
    try:
        return _measure(spec, device, in_process)
    finally:
        if in_process:
            gc.unfreeze()
            torch.set_num_threads(threads_before)


def _measure(spec: dict, device: str, in_process: bool) -> list[dict]:
    import torch
    from sara.backbones import build_denoiser_from_config

    torch.manual_seed(0)
    probe = Probe(device)
    t0 = time.perf_counter()
    model = build_denoiser_from_config(spec["arch"], random_init=True, device=device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    target = scaled_target(spec["budget"], n_params)
    model_bytes = probe.current()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prep = prepare(spec["method"], model, target, device, spec.get("lr"),
                   spec.get("lt_sft_selection", "random"))
    setup_s = time.perf_counter() - t0
    setup_peak = probe.peak()
    after_setup = probe.current()
    out = []
    for resolution in spec["resolutions"]:
        oom = False
        for bs in spec["batch_sizes"]:
            rec: dict[str, Any] = {
                "method": spec["method"], "batch_size": bs, "resolution": resolution, "device": device,
                "budget": target, "budget_arg": spec["budget"], "trainable": prep.trainable, "peak_bytes": None, "step_s": None,
                "floor_bytes": None,
                "dense_grad_bytes_frozen": prep.touched_numel * prep.param_bytes,
                "arch": spec["arch"], "dtype": spec["dtype"], "n_params": n_params,
                "threads": torch.get_num_threads(),
                "param_bytes": prep.param_bytes, "index_bytes_floor": prep.index_bytes_floor,
                "model_bytes": model_bytes, "setup_peak_bytes": setup_peak,
                "after_setup_bytes": after_setup, "build_s": round(build_s, 2),
                "setup_s": round(setup_s, 2), **{f"info_{k}": v for k, v in prep.info.items()},
            }
            if oom:
                rec["error"] = "skipped after out-of-memory at a smaller batch size"
                out.append(rec)
                continue
            try:
                inputs = _inputs(model, bs, resolution, device)
                probe.reset()
                times, cpu_times, rank_times = [], [], []
                rank = getattr(prep.optimizer, "rank", None)
                for i in range(spec["warmup"] + spec["steps"]):
                    probe.sync()
                    s, c = time.perf_counter(), time.process_time()
                    _one_step(prep, inputs, device, spec["dtype"])
                    probe.sync()
                    if i >= spec["warmup"]:
                        times.append(time.perf_counter() - s)
                        cpu_times.append(time.process_time() - c)
                        if rank is not None:
                            rank_times.append(rank.last_seconds)
                rec["peak_bytes"] = probe.peak()
                rec["step_s"] = statistics.median(times)
                rec["step_s_min"], rec["step_s_max"] = min(times), max(times)
                rec["step_s_all"] = [round(x, 4) for x in times]
                if rank_times:  # the rank loss's share of each timed step (SaRA)
                    rec["rank_s_all"] = [round(x, 4) for x in rank_times]
                    rec["rank_targets_last"] = list(rank.last_targets)
                # CPU seconds of this process per step (all its threads): on a CPU shared with
                # other work this is steadier than wall time, which includes waiting for a core
                rec["step_cpu_s"] = statistics.median(cpu_times)
                rec["persistent_bytes"] = probe.current() - model_bytes
                if probe.cuda:
                    rec["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
                del inputs
            except torch.cuda.OutOfMemoryError as e:  # type: ignore[attr-defined]
                oom = True
                rec["error"] = f"out of memory: {str(e).splitlines()[0][:200]}"
                if prep.optimizer is not None:
                    prep.optimizer.zero_grad(set_to_none=True)
                gc.collect()
                torch.cuda.empty_cache()
            out.append(rec)
            if not in_process:
                print(MARK + json.dumps(rec), flush=True)
    return out


# ------------------------------------------------------------------------------------------------
# parent: orchestration
# ------------------------------------------------------------------------------------------------
def _run_child(spec: dict, timeout: float | None) -> list[dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout, env=env)
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr, rc = f"timed out after {timeout:.0f} s", -1
    recs = [json.loads(line[len(MARK):]) for line in stdout.splitlines() if line.startswith(MARK)]
    error = None
    if rc != 0:
        err = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
        error = f"child exited with {rc}: {(err[-1] if err else 'no output')[-300:]}"
    return _complete(spec, recs, error, t0)


def _complete(spec: dict, recs: list[dict], error: str | None, t0: float) -> list[dict]:
    """After a failure (``error``), an error record for every (resolution, batch size) left
    unmeasured; every record gets the method's wall time."""
    if error is not None:
        print(f"  [{spec['method']}] failed: {error}", flush=True)
        done = {(r["resolution"], r["batch_size"]) for r in recs}
        recs += [_empty_record(spec, res, bs, error=error) for res in spec["resolutions"]
                 for bs in spec["batch_sizes"] if (res, bs) not in done]
    for r in recs:
        r.setdefault("wall_s", round(time.perf_counter() - t0, 1))
    return recs


def _run_in_process(spec: dict) -> list[dict]:
    """``--fresh-process none``: :func:`child_main` in this process; an exception becomes an
    error record for every (resolution, batch size) it left unmeasured."""
    t0 = time.perf_counter()
    recs, error = [], None
    try:
        recs = child_main({**spec, "in_process": True})
    except Exception as e:  # noqa: BLE001 - recorded, as a failed child is
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    finally:
        gc.collect()
    return _complete(spec, recs, error, t0)


def _empty_record(spec: dict, resolution: int, bs: int, error: str) -> dict:
    return {"method": spec["method"], "batch_size": bs, "resolution": resolution, "device": spec["device"],
            "budget": None, "budget_arg": spec["budget"], "trainable": None, "peak_bytes": None, "step_s": None, "floor_bytes": None,
            "dense_grad_bytes_frozen": None, "arch": spec["arch"], "dtype": spec["dtype"], "error": error}


def _memory_need_estimate(method: str, n_params: int, floor_peak: int | None, p_bytes: int = 4) -> int:
    """A rough upper estimate of a method's CPU peak (to skip it when the machine cannot hold it)."""
    base = floor_peak or n_params * p_bytes * 2
    if method == "full":  # dense grads + two full-size Adam moments, + a margin
        return int(base + n_params * p_bytes * 3.3 + 2**30)
    if method in ("lt_sft", "sara_naive"):  # the same + boolean masks + the masking temporaries
        return int(base + n_params * p_bytes * 3.6 + 2**30)
    return int(base + n_params * p_bytes * 0.5)


def fill_floor(records: list[dict]) -> None:
    """floor_bytes = floor run's peak + 4 x trained entries x bytes + index bytes (per record)."""
    floor = {(r["resolution"], r["batch_size"]): r["peak_bytes"] for r in records
             if r["method"] == "floor" and r.get("peak_bytes")}
    for r in records:
        fb = floor.get((r["resolution"], r["batch_size"]))
        if r["method"] == "floor":
            r["floor_bytes"] = r.get("peak_bytes")
            continue
        if fb is None or r.get("trainable") is None:
            continue
        r["floor_bytes"] = int(fb + 4 * r["trainable"] * r.get("param_bytes", 4) + r.get("index_bytes_floor", 0))


# ------------------------------------------------------------------------------------------------
# ratios and the targets
# ------------------------------------------------------------------------------------------------
def _get(records, method, res, bs):
    for r in records:
        if r["method"] == method and r["resolution"] == res and r["batch_size"] == bs:
            return r
    return None


def _ok(r) -> bool:
    return r is not None and r.get("peak_bytes") is not None and r.get("step_s") is not None


def _ratio(a, b):
    return a / b if (a is not None and b) else None


def _f(x, spec=".2f"):
    return "n/a" if x is None else format(x, spec)


def evaluate_targets(records: list[dict]) -> list[dict]:
    """The targets T1-T7 (docs/benchmark.md), per resolution: a list of
    ``{"target", "status" (PASS|MISS|N/A), "detail"}``."""
    out = []
    resolutions = sorted({r["resolution"] for r in records})
    for res in resolutions:
        bss = sorted({r["batch_size"] for r in records if r["resolution"] == res})
        tag = f"[{res}px]"
        # T1: sara peak <= 1.05 x floor, every batch size
        det, st = [], []
        for bs in bss:
            s = _get(records, "sara", res, bs)
            if _ok(s) and s.get("floor_bytes"):
                q = s["peak_bytes"] / s["floor_bytes"]
                st.append(q <= 1.05)
                det.append(f"bs{bs}: {q:.3f}x")
        out.append(_target(f"{tag} T1 SaRA peak <= 1.05 x floor (every batch size)", st, det))
        # T2: sara peak <= lt_sft peak - 0.9 x dense_grad_bytes_frozen (lt_sft's)
        det, st = [], []
        for bs in bss:
            s, l = _get(records, "sara", res, bs), _get(records, "lt_sft", res, bs)
            if _ok(s) and _ok(l) and l.get("dense_grad_bytes_frozen") is not None:
                bound = l["peak_bytes"] - 0.9 * l["dense_grad_bytes_frozen"]
                st.append(s["peak_bytes"] <= bound)
                det.append(f"bs{bs}: {fmt_bytes(s['peak_bytes'])} vs {fmt_bytes(bound)} "
                           f"(LT-SFT {fmt_bytes(l['peak_bytes'])} - 0.9 x {fmt_bytes(l['dense_grad_bytes_frozen'])})")
        out.append(_target(f"{tag} T2 SaRA peak <= LT-SFT peak - 0.9 x dense grads of frozen entries", st, det))
        # T3: sara peak < lora (dropout 0.1) peak at the largest batch measured (by both)
        det, st = [], []
        both = [bs for bs in bss if _ok(_get(records, "sara", res, bs)) and _ok(_get(records, LORA_REF, res, bs))]
        if both:
            bs = max(both)
            s, l = _get(records, "sara", res, bs), _get(records, LORA_REF, res, bs)
            st.append(s["peak_bytes"] < l["peak_bytes"])
            det.append(f"bs{bs}: {fmt_bytes(s['peak_bytes'])} vs {fmt_bytes(l['peak_bytes'])} "
                       f"({s['peak_bytes'] / l['peak_bytes']:.3f}x)")
        out.append(_target(f"{tag} T3 SaRA peak < LoRA(dropout 0.1) peak at the largest batch", st, det))
        # T4: sara step <= 1.1 x lora (dropout 0.1) step, every batch size
        det, st = [], []
        for bs in bss:
            s, l = _get(records, "sara", res, bs), _get(records, LORA_REF, res, bs)
            if _ok(s) and _ok(l):
                q = s["step_s"] / l["step_s"]
                st.append(q <= 1.1)
                extra = ""
                if str(s.get("device", "")).startswith("cpu") and s.get("step_cpu_s") and l.get("step_cpu_s"):
                    extra = f" (process CPU time {s['step_cpu_s'] / l['step_cpu_s']:.3f}x)"
                det.append(f"bs{bs}: {q:.3f}x{extra}")
        out.append(_target(f"{tag} T4 SaRA step time <= 1.1 x LoRA(dropout 0.1) (every batch size)", st, det))
        # T5-T7: peak <= LoRA(dropout 0.1), step <= 1.05 x floor_wgrad, step <= LoRA(dropout 0.1)
        for name, ref, bound, key in (
                ("T5 SaRA peak <= LoRA(dropout 0.1) peak (every batch size)", LORA_REF, 1.0, "peak_bytes"),
                ("T6 SaRA step time <= 1.05 x floor_wgrad (every batch size)", "floor_wgrad", 1.05, "step_s"),
                ("T7 SaRA step time <= LoRA(dropout 0.1) (every batch size)", LORA_REF, 1.0, "step_s")):
            det, st = [], []
            for bs in bss:
                s, l = _get(records, "sara", res, bs), _get(records, ref, res, bs)
                if _ok(s) and _ok(l):
                    q = s[key] / l[key]
                    st.append(q <= bound)
                    det.append(f"bs{bs}: {q:.3f}x")
            out.append(_target(f"{tag} {name}", st, det))
    return out


def _target(name, statuses, details):
    if not statuses:
        return {"target": name, "status": "N/A", "detail": "not measured (method missing or failed)"}
    return {"target": name, "status": "PASS" if all(statuses) else "MISS", "detail": "; ".join(details)}


def ratio_lines(records: list[dict]) -> list[str]:
    """The lines the benchmark prints last: ratios per batch size, SaRA vs LT-SFT, PASS/MISS."""
    lines = []
    head = records[0] if records else {}
    lines.append(f"== ratios: arch={head.get('arch')} device={head.get('device')} dtype={head.get('dtype')} "
                 f"budget={head.get('budget_arg')} (= {head.get('budget')} entries on this model) (timings of one run side by side; on a shared or noisy "
                 f"machine compare ratios, not absolute seconds) ==")
    methods = []
    for r in records:
        if r["method"] not in methods:
            methods.append(r["method"])
    cpu_col = any(r.get("step_cpu_s") for r in records) and str(head.get("device", "")).startswith("cpu")
    for res in sorted({r["resolution"] for r in records}):
        for bs in sorted({r["batch_size"] for r in records if r["resolution"] == res}):
            lref = _get(records, LORA_REF, res, bs)
            wref = _get(records, "floor_wgrad", res, bs)
            lines.append(f"-- {res}px (latent {res // 8}x{res // 8}), batch {bs}: "
                         f"method  peak  step_s(median [min-max])  peak/floor  peak/{LORA_REF}  step/{LORA_REF}  step/floor_wgrad"
                         + (f"  cpu_time/{LORA_REF}" if cpu_col else ""))
            for m in methods:
                r = _get(records, m, res, bs)
                if r is None:
                    continue
                if not _ok(r):
                    lines.append(f"   {m:<13} {r.get('error', 'not measured')[:100]}")
                    continue
                pf = _ratio(r["peak_bytes"], r.get("floor_bytes"))
                pl = _ratio(r["peak_bytes"], lref["peak_bytes"]) if _ok(lref) else None
                sl = _ratio(r["step_s"], lref["step_s"]) if _ok(lref) else None
                sw = _ratio(r["step_s"], wref["step_s"]) if _ok(wref) else None
                lines.append(f"   {m:<13} {fmt_bytes(r['peak_bytes']):>10} {r['step_s']:8.3f} "
                             f"[{r.get('step_s_min', r['step_s']):.3f}-{r.get('step_s_max', r['step_s']):.3f}]  "
                             f"{_f(pf, '.3f'):>6}  {_f(pl, '.3f'):>6}  {_f(sl, '.3f'):>6}  {_f(sw, '.3f'):>6}"
                             + (f"  {_f(_ratio(r.get('step_cpu_s'), lref.get('step_cpu_s')) if _ok(lref) else None, '.3f'):>6}"
                                if cpu_col else ""))
            s, l = _get(records, "sara", res, bs), _get(records, "lt_sft", res, bs)
            if _ok(s) and _ok(l) and l.get("dense_grad_bytes_frozen") is not None:
                bound = l["peak_bytes"] - 0.9 * l["dense_grad_bytes_frozen"]
                lines.append(f"   SaRA peak {fmt_bytes(s['peak_bytes'])} vs LT-SFT peak - 0.9 x dense_grad_bytes_frozen "
                             f"= {fmt_bytes(l['peak_bytes'])} - 0.9 x {fmt_bytes(l['dense_grad_bytes_frozen'])} "
                             f"= {fmt_bytes(bound)} (LT-SFT - SaRA = {fmt_bytes(l['peak_bytes'] - s['peak_bytes'])})")
    for t in evaluate_targets(records):
        lines.append(f"{t['status']:<4} {t['target']}: {t['detail']}")
    return lines


# ------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------
def plot(records: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res_list = sorted({r["resolution"] for r in records})
    fig, axes = plt.subplots(len(res_list), 2, figsize=(11, 4 * len(res_list)), squeeze=False)
    methods = []
    for r in records:
        if r["method"] not in methods:
            methods.append(r["method"])
    head = records[0]
    for row, res in enumerate(res_list):
        for m in methods:
            rs = sorted([r for r in records if r["method"] == m and r["resolution"] == res and _ok(r)],
                        key=lambda r: r["batch_size"])
            if not rs:
                continue
            style = dict(marker="o", linestyle="--" if m in REFERENCES else "-")
            x = [r["batch_size"] for r in rs]
            axes[row][0].plot(x, [r["peak_bytes"] / 2**30 for r in rs], label=m, **style)
            axes[row][1].plot(x, [r["step_s"] for r in rs], label=m, **style)
        s = sorted([r for r in records if r["method"] == "sara" and r["resolution"] == res and r.get("floor_bytes")],
                   key=lambda r: r["batch_size"])
        if s:
            axes[row][0].plot([r["batch_size"] for r in s], [r["floor_bytes"] / 2**30 for r in s], color="k",
                              linestyle=":", label="floor for SaRA's budget")
        for col, ylabel in enumerate(("peak memory (GiB)", "step time (s)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{head.get('arch')} {res}px ({res // 8}x{res // 8} latents), {head.get('device')}, "
                         f"{head.get('dtype')}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def _parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sd15", help="sd15 | sd2 | sd3 | sdxl | tiny | path to a UNet config.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", default="256", help="pixels (latents are resolution/8); a comma list runs several")
    ap.add_argument("--batch-sizes", default="1,4")
    ap.add_argument("--budget", default="50M", help="trainable entries on SD 1.5's UNet; scaled to other sizes")
    ap.add_argument("--methods", default="full,lt_sft,lt_sft_ub,lora,lora_dropout,sara,sara_naive")
    ap.add_argument("--references", default="floor,floor_wgrad",
                    help="reference runs (floor is always run: the targets need it)")
    ap.add_argument("--json", required=False, help="write the records here")
    ap.add_argument("--plot", default=None, help="write a Fig.-5-like plot (png)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median, min and max are reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--crossover", action=argparse.BooleanOptionalAction, default=True,
                    help="first measure, on this device, the density below which a layer's weight "
                         "gradient at the trained entries only beats the dense GEMM (printed, and "
                         "saved beside --json as *_crossover.json)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16-autocast", "bf16-autocast"])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads in each measuring process (default: torch's own, "
                         "= the cores). On a CPU shared with other work, 1 avoids the stalls of "
                         "parallel regions waiting for a descheduled thread and gives steadier ratios")
    ap.add_argument("--lr", type=float, default=None, help="learning rate passed to make_optimizer (None: method default)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds: stop starting new methods after this, and still write what was measured")
    ap.add_argument("--child-timeout", type=float, default=None, help="seconds per child process")
    ap.add_argument("--skip-if-no-memory", action=argparse.BooleanOptionalAction, default=True,
                    help="on cpu, skip a method whose estimated peak exceeds the memory available now")
    ap.add_argument("--lt-sft-selection", default="random", choices=["random", "phase1"],
                    help="LT-SFT's k entries: random model-wide (default; no phase 1) or its real "
                         "phase 1 (one full fine-tuning step on random inputs, needs full-FT memory)")
    ap.add_argument("--fresh-process", default="per-method", choices=["per-method", "per-batch", "none"],
                    help="one subprocess per method, running every (resolution, batch size) in "
                         "increasing order with the peak reset in between (default), one per "
                         "(method, resolution, batch size), or none: every method in this process "
                         "(tests and debugging only: peaks are not isolated)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _default_crossover(device: str):
    try:
        from sara.core.sampled_grad import CROSSOVER_DENSITY
        return CROSSOVER_DENSITY.get(device.split(":")[0])
    except ImportError:
        return None


def measure_crossover(arch: str, device: str, resolution: int, batch_size: int,
                      densities=(0.002, 0.005, 0.01, 0.02, 0.05), threads: int | None = None,
                      reps: int = 3) -> dict:
    """Weight-gradient time of representative layers of ``arch`` (linear and 1x1/3x3 conv at
    each UNet width, with the token counts of ``resolution`` and ``batch_size``): the dense GEMM
    against the gradient at ``density`` random entries only (``sara.core.sampled_grad``). The
    crossover is the largest density at which the sampled path is faster for the layers'
    summed time (0 if it never is), for the linear and 1x1 layers and for the 3x3 convs apart.
    On CPU the times are process CPU seconds."""
    import torch

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _crossover(arch, device, resolution, batch_size, densities, reps)
    finally:
        torch.set_num_threads(threads_before)


def _crossover(arch, device, resolution, batch_size, densities, reps) -> dict:
    import torch
    from torch import nn
    from sara.backbones import load_denoiser_config
    from sara.core.sampled_grad import SampledLayer

    cfg = load_denoiser_config(arch)
    widths = list(cfg.get("block_out_channels", (320, 640, 1280)))
    cross = cfg.get("cross_attention_dim", 768)
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    lat = resolution // 8
    layers = []
    for level, c in enumerate(widths):
        side = max(1, lat // (2 ** level))
        layers += [("linear", nn.Linear(c, c), (batch_size, side * side, c)),
                   ("linear_ff", nn.Linear(c, 8 * c), (batch_size, side * side, c)),
                   ("conv1x1", nn.Conv2d(c, c, 1), (batch_size, c, side, side)),
                   ("conv3x3", nn.Conv2d(c, c, 3, padding=1), (batch_size, c, side, side))]
    # per group, each with its own crossover for "auto": linear and 1x1 conv layers; 3x3 convs
    dense_t, rows = {"linear_1x1": 0.0, "conv3x3": 0.0}, []
    sampled_t = {g: {d: 0.0 for d in densities} for g in dense_t}

    # CPU: process CPU time (all threads), steadier than wall time on a shared machine
    clock = time.perf_counter if device.startswith("cuda") else time.process_time

    def timed(fn):
        fn()
        best = float("inf")
        for _ in range(reps):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = clock()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, clock() - t)
        return best

    for kind, mod, shape in layers:
        mod = mod.to(device)
        x = torch.randn(*shape, device=device)
        y = mod(x)
        g = torch.randn_like(y)
        mod.weight.requires_grad_(True)
        group = "conv3x3" if kind == "conv3x3" else "linear_1x1"
        dense = timed(lambda: torch.autograd.grad(mod(x), mod.weight, g))
        dense_t[group] += dense
        row = {"layer": kind, "weight": list(mod.weight.shape), "input": list(shape), "dense_s": dense}
        for d in densities:
            k = max(1, int(mod.weight.numel() * d))
            idx = torch.randperm(mod.weight.numel(), device=device)[:k].sort().values
            layer = SampledLayer(mod, idx, lambda part: None)
            xg = x.detach().requires_grad_(True)  # the input gradient both paths compute
            t_s = timed(lambda: torch.autograd.grad(layer.forward(xg), xg, g))
            t_d = timed(lambda: torch.autograd.grad(mod(xg), (xg, mod.weight), g))
            row[f"sampled_{d:g}_s"], row[f"dense_with_input_grad_{d:g}_s"] = t_s, t_d
            sampled_t[group][d] += t_s - (t_d - dense)  # compare weight-gradient work only
        rows.append(row)
    out = {"device": device, "arch": arch, "resolution": resolution, "batch_size": batch_size,
           "threads": torch.get_num_threads(), "layers": rows}
    for grp, suffix in (("linear_1x1", ""), ("conv3x3", "_conv3x3")):
        faster = [d for d in densities if sampled_t[grp][d] < dense_t[grp]]
        out["dense_s" + suffix] = dense_t[grp]
        out["sampled_s" + suffix] = {f"{d:g}": v for d, v in sampled_t[grp].items()}
        out["crossover_density" + suffix] = max(faster) if faster else 0.0
    return out


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        if spec.get("crossover"):
            print(MARK + json.dumps(measure_crossover(**spec["crossover"])), flush=True)
            return 0
        child_main(spec)
        return 0
    t_start = time.perf_counter()
    cuda = args.device.startswith("cuda")
    steps, warmup = args.steps, args.warmup
    resolutions = [int(x) for x in str(args.resolution).split(",") if x]
    batch_sizes = sorted(int(x) for x in args.batch_sizes.split(",") if x)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    # the floor first (the targets need it), then the methods in the order given (a reference
    # named there keeps its place), then the other references
    refs = [r for r in args.references.split(",") if r and r != "floor"]
    order = ["floor"] + [m for m in methods if m != "floor"] + [r for r in refs if r not in methods]
    budget = str(args.budget)
    base = {"arch": args.arch, "device": args.device, "budget": budget, "dtype": args.dtype,
            "steps": steps, "warmup": warmup, "lr": args.lr, "lt_sft_selection": args.lt_sft_selection,
            "threads": args.threads}
    try:
        from sara.backbones import KNOWN_PARAM_COUNTS, build_denoiser_from_config
        n_params_guess = KNOWN_PARAM_COUNTS.get(args.arch)
        if n_params_guess is None:  # a config file: count on the meta device (no memory)
            n_params_guess = sum(p.numel() for p in
                                 build_denoiser_from_config(args.arch, device="meta").parameters())
    except Exception:
        n_params_guess = REFERENCE_PARAMS
    print(f"memory_speed: arch={args.arch} device={args.device} dtype={args.dtype} resolutions={resolutions} "
          f"batch sizes={batch_sizes} budget={args.budget} methods={order} steps={steps} warmup={warmup} "
          f"threads={args.threads or 'torch default'}",
          flush=True)

    records: list[dict] = []
    if args.crossover:
        cspec = {"crossover": {"arch": args.arch, "device": args.device,
                               "resolution": resolutions[0], "batch_size": max(batch_sizes),
                               "threads": args.threads}}
        if args.fresh_process == "none":
            found, err = [measure_crossover(**cspec["crossover"])], ""
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cspec)]
            env = dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + os.environ["PYTHONPATH"]
                                                             if os.environ.get("PYTHONPATH") else ""))
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env)
            found = [json.loads(l[len(MARK):]) for l in proc.stdout.splitlines()
                     if l.startswith(MARK)]
            err = proc.stderr.strip()[-300:]
        if found:
            cr = found[0]
            print(f"weight-gradient crossover on {args.device} ({args.arch}, {resolutions[0]} px, "
                  f"batch {max(batch_sizes)}, {cr['threads']} thread(s)): linear and 1x1 layers "
                  f"dense {cr['dense_s']:.3f} s; sampled at trained density "
                  + ", ".join(f"{d}: {v:.3f} s" for d, v in cr["sampled_s"].items())
                  + f" -> sampled path wins below density {cr['crossover_density']:g} "
                  f"(3x3 convs: {cr['crossover_density_conv3x3']:g}; "
                  f"sara.core.sampled_grad.CROSSOVER_DENSITY uses "
                  f"{_default_crossover(args.device)})", flush=True)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(str(Path(args.json).with_suffix("")) + "_crossover.json").write_text(
                    json.dumps(cr, indent=1))
        else:
            print(f"weight-gradient crossover: measurement failed: {err}", flush=True)

    def save():
        fill_floor(records)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(str(args.json) + ".tmp")
            tmp.write_text(json.dumps(records, indent=1))
            tmp.replace(args.json)

    # one fresh process per method runs every (resolution, batch size), peak reset in between
    # (or, with --fresh-process per-batch, one per (method, resolution, batch size)).
    jobs = []
    per_method = args.fresh_process in ("per-method", "none")
    for m in order:
        if per_method:
            jobs.append((m, resolutions, batch_sizes))
        else:
            for res in resolutions:
                for bs in batch_sizes:
                    jobs.append((m, [res], [bs]))
    for m, res_l, bs_l in jobs:
        if args.time_limit and time.perf_counter() - t_start > args.time_limit:
            for res in res_l:
                for bs in bs_l:
                    records.append(_empty_record({**base, "method": m}, res, bs, "time limit reached"))
            continue
        spec = {**base, "method": m, "resolutions": res_l, "batch_sizes": bs_l}
        if not cuda and args.skip_if_no_memory:
            fl = [r.get("peak_bytes") for r in records if r["method"] == "floor" and r["batch_size"] == max(bs_l)]
            known = [r["n_params"] for r in records if r.get("n_params")]
            need = _memory_need_estimate(m, known[0] if known else n_params_guess, fl[0] if fl else None)
            try:
                import psutil
                avail = psutil.virtual_memory().available
            except Exception:
                avail = None
            if avail is not None and need > avail:
                msg = f"skipped: needs ~{fmt_bytes(need)}, {fmt_bytes(avail)} available now"
                print(f"  [{m}] {msg}", flush=True)
                for res in res_l:
                    for bs in bs_l:
                        records.append(_empty_record(spec, res, bs, msg))
                save()
                continue
        t0 = time.perf_counter()
        recs = (_run_in_process(spec) if args.fresh_process == "none"
                else _run_child(spec, args.child_timeout))
        for r in recs:
            status = (f"peak {fmt_bytes(r['peak_bytes'])}, step median {r['step_s']:.3f} s "
                      f"(min {r.get('step_s_min', r['step_s']):.3f}, max {r.get('step_s_max', r['step_s']):.3f}), "
                      f"trainable {r['trainable']:,}"
                      + (f", rank loss median {statistics.median(r['rank_s_all']):.3f} s"
                         if r.get("rank_s_all") else "")
                      if _ok(r) else r.get("error", "?"))
            print(f"  [{m}] {r['resolution']}px bs{r['batch_size']}: {status}", flush=True)
        print(f"  [{m}] done in {time.perf_counter() - t0:.0f} s", flush=True)
        records.extend(recs)
        save()
    save()
    if args.plot and records:
        plot(records, args.plot)
        print(f"plot: {args.plot}", flush=True)
    if args.json:
        print(f"records: {args.json}", flush=True)
    for line in ratio_lines(records):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
