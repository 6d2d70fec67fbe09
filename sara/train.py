"""Method-agnostic trainer (accelerate).

The trainer knows nothing about a method beyond :class:`sara.methods.base.Method`: it is handed the
module to train (what ``method.apply`` returned), the optimizer (``method.make_optimizer``), a loss
function ``loss_fn(module, batch, generator) -> scalar`` (the backbone's diffusion loss) and a
map-style dataset. It adds a cosine (or other ``diffusers``) schedule with warm-up, gradient
accumulation, mixed precision on GPU (bf16 where supported, else fp16; fp32 on CPU), optional
gradient clipping, a progress bar, ``train_log.jsonl``, optional wandb logging, atomic checkpoints
and an exact resume after a kill.

Exact resume. Everything that decides the next step is either a pure function of
``(seed, step)`` or stored in the checkpoint:

* data order: batch ``b`` of the stream holds positions ``[b*B, (b+1)*B)`` of a sequence of
  per-epoch permutations, permutation ``e`` drawn from ``torch.Generator().manual_seed(seed+e)``
  (:class:`InfiniteBatchSampler`); the checkpoint stores how many batches were consumed;
* diffusion noise and timesteps: a fresh generator per micro-step, seeded from
  ``(seed, micro-step, process)`` and passed to ``loss_fn``;
* trained values (``method.trained_state_dict``), optimizer, LR scheduler, fp16 loss scaler,
  global RNG states (python, numpy, torch CPU and CUDA) and the method's extra state when it has
  one (``method.extra_state_dict()`` / ``load_extra_state_dict``) are in the checkpoint.

On CPU, 6 straight steps and 3 steps + kill + resume 3 give bit-identical trained values (tested).

Optional method hooks (duck-typed, none required by ``base.Method``):
``method.extra_loss(module, step) -> Tensor | None`` (added to the loss; e.g. an L0 penalty),
``method.on_step_end(step, total_steps)`` (after each optimizer step),
``method.extra_state_dict()`` / ``method.load_extra_state_dict(d)`` (resume).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from sara.env import peak_memory
from sara.io import atomic_torch_save, atomic_write_text
from sara.precision import cuda_half_precision
from sara.record import CHECKPOINT_DIR, CHECKPOINT_NAME, TRAIN_LOG_FILE

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "sara-train-checkpoint"
CHECKPOINT_VERSION = 1


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped, the last checkpoint was kept."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint in the run directory was made with other training settings."""


@dataclass
class TrainConfig:
    steps: int = 400                 # optimizer steps
    batch_size: int = 16             # per process and micro-step
    grad_accum: int = 1              # micro-steps per optimizer step
    lr: float | None = None          # None: the method's own default; "eq12" / "tuned": see sara.budget.resolve_lr
    lr_of: str | None = None         # lr=tuned: whose searched rate (None: the run's method; "sara": its variants)
    weight_decay: float = 1e-2
    betas: Sequence[float] = (0.9, 0.999)
    lr_scheduler: str = "cosine"     # any diffusers.optimization scheduler name
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0  # None or <= 0: no clipping
    mixed_precision: str = "auto"    # auto | no | fp16 | bf16  (auto: bf16/fp16 on GPU, no on CPU)
    device: str = "auto"             # auto | cpu | cuda
    checkpoint_every: int = 100      # steps; the final step is always checkpointed; 0 = only final
    keep_optimizer_state: bool = False  # keep optimizer/scheduler in the final checkpoint
    resume: bool = True              # resume from the run's checkpoint when present
    num_workers: int = 0             # DataLoader workers
    shuffle: bool = True
    log_every: int = 10              # progress-bar / wandb update period (train_log: every step)
    gradient_checkpointing: bool = False
    seed: int = 0
    progress: bool = True

    @classmethod
    def from_mapping(cls, m: Mapping | None, **overrides: Any) -> "TrainConfig":
        d = dict(m or {})
        d.update(overrides)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown train settings {unknown}; known: {sorted(names)}")
        if "betas" in d and d["betas"] is not None:
            d["betas"] = tuple(float(b) for b in d["betas"])
        return cls(**d)


# ------------------------------------------------------------------------------------------------
# accelerator
# ------------------------------------------------------------------------------------------------
def resolve_mixed_precision(mixed_precision: str, device: str | torch.device) -> str:
    device = torch.device(device) if not isinstance(device, torch.device) else device
    mp = (mixed_precision or "auto").lower()
    if mp in ("fp32", "none", "false"):
        mp = "no"
    if device.type != "cuda":
        if mp not in ("auto", "no"):
            log.warning("mixed_precision=%s asked on %s; training in fp32", mp, device.type)
        return "no"
    if mp == "auto":
        return cuda_half_precision()
    if mp not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be auto|no|fp16|bf16, got {mixed_precision!r}")
    return mp


def make_accelerator(mixed_precision: str = "auto", device: str = "auto"):
    """An ``accelerate.Accelerator`` for this process (re-created safely inside one process)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    target = torch.device("cpu") if cpu else torch.device("cuda")
    mp = resolve_mixed_precision(mixed_precision, target)
    from accelerate.state import PartialState

    # AcceleratorState is a process-wide singleton: a second Accelerator in the same process
    # (Hydra's basic launcher runs a sweep's jobs in one process; tests) would otherwise keep the
    # first one's precision and device. A distributed (partial) state is kept: resetting it
    # would tear down the process group.
    distributed = bool(PartialState._shared_state) and PartialState().num_processes > 1
    AcceleratorState._reset_state(reset_partial_state=not distributed)
    return Accelerator(cpu=cpu, mixed_precision=mp)


# ------------------------------------------------------------------------------------------------
# data order
# ------------------------------------------------------------------------------------------------
class InfiniteBatchSampler:
    """Endless deterministic stream of index batches for a dataset of ``n`` items.

    Global batch ``b`` holds stream positions ``[b*B, (b+1)*B)``; position ``p`` is item
    ``perm_e[p mod n]`` with ``e = p // n`` and ``perm_e`` a permutation drawn from
    ``manual_seed(seed + e)`` (identity when ``shuffle`` is false). Process ``rank`` of ``world``
    takes global batches ``rank, rank + world, ...``; ``start`` is the number of batches this
    process already consumed, so a resumed stream continues exactly.
    """

    MAX_SHUFFLE = 50_000_000  # larger (procedural, near-unbounded) datasets are read in order

    def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True,
                 start: int = 0, rank: int = 0, world: int = 1) -> None:
        if n <= 0:
            raise ValueError("the training dataset is empty")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.shuffle = shuffle and n <= self.MAX_SHUFFLE
        self.start, self.rank, self.world = int(start), int(rank), int(world)
        self._perm_epoch: int | None = None
        self._perm: torch.Tensor | None = None

    def _item(self, pos: int) -> int:
        e, i = divmod(pos, self.n)
        if not self.shuffle:
            return i
        if self._perm_epoch != e:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            self._perm = torch.randperm(self.n, generator=g)
            self._perm_epoch = e
        return int(self._perm[i])

    def batch(self, b: int) -> list[int]:
        return [self._item(p) for p in range(b * self.batch_size, (b + 1) * self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        while True:
            yield self.batch(k * self.world + self.rank)
            k += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is endless
        return 2**62


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def default_collate(items: list) -> Any:
    try:
        from sara.data import collate
    except ImportError:  # sara.data not installed yet: plain torch collation
        from torch.utils.data import default_collate as collate
    return collate(items)


def make_loader(dataset, batch_size: int, seed: int, shuffle: bool = True, start: int = 0,
                rank: int = 0, world: int = 1, collate_fn: Callable | None = None,
                num_workers: int = 0):
    from torch.utils.data import DataLoader

    sampler = InfiniteBatchSampler(len(dataset), batch_size, seed=seed, shuffle=shuffle,
                                   start=start, rank=rank, world=world)
    # a private generator: creating the iterator must not draw from the global torch RNG, whose
    # state is part of the exact-resume contract
    gen = torch.Generator().manual_seed(int(seed) * 7 + int(start) + 1)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn or default_collate,
                      num_workers=num_workers, persistent_workers=False, generator=gen)


def endless_batches(dataset, batch_size: int, seed: int, device: torch.device | str = "cpu",
                    shuffle: bool = True, collate_fn: Callable | None = None) -> Iterator[Any]:
    """An endless iterator of device batches (for ``PrepareContext.batches``)."""
    device = torch.device(device)
    for b in make_loader(dataset, batch_size, seed, shuffle=shuffle, collate_fn=collate_fn):
        yield to_device(b, device)


def micro_step_seed(seed: int, micro_step: int, rank: int = 0, world: int = 1) -> int:
    """Seed of the noise generator of one micro-step (pure function: resume-exact)."""
    return (int(seed) * 1_000_003 + int(micro_step) * int(world) + int(rank)) % (2**63 - 1)


# ------------------------------------------------------------------------------------------------
# RNG state
# ------------------------------------------------------------------------------------------------
def get_rng_state() -> dict:
    # plain tensors, numbers and tuples only: the checkpoint loads with weights_only=True
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"python": random.getstate(),
          "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                    float(gauss)),
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Mapping) -> None:
    random.setstate(tuple(st["python"][:1]) + (tuple(st["python"][1]),) + tuple(st["python"][2:]))
    kind, keys, pos, has_gauss, gauss = st["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(st["torch"].cpu() if isinstance(st["torch"], torch.Tensor) else st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all([s.cpu() for s in st["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ------------------------------------------------------------------------------------------------
# trainer
# ------------------------------------------------------------------------------------------------
def _needs_ddp(model: nn.Module) -> bool:
    """Whether DDP has anything to synchronise: a trainable parameter outside the model's DDP
    ignore list (sparse methods put their touched tensors there and average their own flat
    gradient, so a model they train alone needs no DDP wrapper and no dense bucket)."""
    ignored = set(getattr(model, "_ddp_params_and_buffers_to_ignore", ()))
    return any(p.requires_grad for n, p in model.named_parameters() if n not in ignored)


@dataclass
class TrainResult:
    steps: int
    final_loss: float | None
    final_loss_mean: float | None   # mean over the last max(1, min(50, steps // 10)) steps
    resumed_from: int | None        # step of the checkpoint resumed from
    train_time_s: float             # training wall time summed over all sessions of the run
    session_time_s: float           # wall time of this session's training
    peak_memory_bytes: int
    peak_memory_kind: str           # cuda_max_allocated | cpu_max_rss
    mixed_precision: str
    device: str
    checkpoint: str | None
    train_log: str | None
    num_processes: int = 1
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Trainer:
    """Train ``model`` with ``optimizer`` on ``dataset`` for ``cfg.steps`` optimizer steps.

    Args:
        model: the module the method returned from ``apply`` (already on the device).
        method: the applied method (for trained state, hooks and the record).
        optimizer: ``method.make_optimizer(...)``.
        loss_fn: ``loss_fn(model, batch, generator)`` -> scalar loss (e.g. backbone.training_loss).
        dataset: map-style dataset of items for ``collate_fn``.
        cfg: :class:`TrainConfig`.
        run_dir: where ``checkpoint/`` and ``train_log.jsonl`` go (None: nothing written).
        accelerator: an ``accelerate.Accelerator`` (made from ``cfg`` when None).
        log_fns: callables ``f(metrics: dict, step: int)`` called every ``log_every`` steps
            (wandb, ...).
    """

    def __init__(self, model: nn.Module, method, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[..., torch.Tensor], dataset, cfg: TrainConfig,
                 run_dir: str | os.PathLike | None = None, accelerator=None,
                 collate_fn: Callable | None = None,
                 log_fns: Iterable[Callable[[dict, int], None]] = ()) -> None:
        self.cfg = cfg
        self.method = method
        self.loss_fn = loss_fn
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.log_fns = list(log_fns)
        self.accelerator = accelerator or make_accelerator(cfg.mixed_precision, cfg.device)
        acc = self.accelerator
        self.device = acc.device
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.ckpt_path = (self.run_dir / CHECKPOINT_DIR / CHECKPOINT_NAME
                          if self.run_dir is not None else None)
        self.log_path = self.run_dir / TRAIN_LOG_FILE if self.run_dir is not None else None

        if cfg.gradient_checkpointing and hasattr(model, "enable_gradient_checkpointing"):
            model.enable_gradient_checkpointing()
        self.raw_model = model
        self.model = (acc.prepare_model(model) if acc.num_processes > 1 and _needs_ddp(model)
                      else model)
        self.raw_optimizer = optimizer
        self.optimizer = acc.prepare_optimizer(optimizer, device_placement=False)
        from diffusers.optimization import get_scheduler

        self.scheduler = get_scheduler(cfg.lr_scheduler, optimizer,
                                       num_warmup_steps=cfg.warmup_steps,
                                       num_training_steps=cfg.steps)
        self.step = 0
        self.batches_consumed = 0  # by this process
        self.elapsed_before = 0.0
        self.last_finite: tuple[int, float] | None = None
        self.resumed_from: int | None = None
        self.losses: list[float] = []

    # --- checkpoints ----------------------------------------------------------------------------
    def _settings(self) -> dict:
        c = self.cfg
        return {"steps": c.steps, "batch_size": c.batch_size, "grad_accum": c.grad_accum,
                "seed": c.seed, "num_processes": self.accelerator.num_processes,
                "lr_scheduler": c.lr_scheduler, "warmup_steps": c.warmup_steps}

    def state_dict(self, final: bool = False) -> dict:
        keep_opt = not final or self.cfg.keep_optimizer_state
        st = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "step": self.step, "settings": self._settings(),
            "trained": self.method.trained_state_dict(),
            "optimizer": self.raw_optimizer.state_dict() if keep_opt else None,
            "scheduler": self.scheduler.state_dict() if keep_opt else None,
            "scaler": (self.accelerator.scaler.state_dict()
                       if getattr(self.accelerator, "scaler", None) is not None else None),
            "rng": get_rng_state(),
            "batches_consumed": self.batches_consumed,
            "last_finite": self.last_finite,
            "losses_tail": self.losses[-100:],
            "elapsed_train_s": self.elapsed_before + self._session_elapsed(),
            "method": type(self.method).__name__,
        }
        if hasattr(self.method, "extra_state_dict"):
            st["method_extra"] = self.method.extra_state_dict()
        return st

    def save_checkpoint(self, final: bool = False) -> Path | None:
        if self.ckpt_path is None:
            return None
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            atomic_torch_save(self.state_dict(final=final), self.ckpt_path)
        self.accelerator.wait_for_everyone()
        return self.ckpt_path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        from sara.weights import load_checkpoint_file

        st = load_checkpoint_file(path)
        if st.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointMismatchError(f"{path} is not a training checkpoint of this suite; "
                                          "set train.resume=false or overwrite=true")
        mine, theirs = self._settings(), st.get("settings", {})
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            raise CheckpointMismatchError(
                f"checkpoint {path} was made with other training settings "
                + ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
                + "; delete it (or the run directory) or set overwrite=true to start again")
        if st.get("method") not in (None, type(self.method).__name__):
            raise CheckpointMismatchError(
                f"checkpoint {path} was made by method {st['method']}, not "
                f"{type(self.method).__name__}")
        self.method.load_trained_state_dict(st["trained"])
        if "method_extra" in st and hasattr(self.method, "load_extra_state_dict"):
            self.method.load_extra_state_dict(st["method_extra"])
        self.step = int(st["step"])
        if self.step < self.cfg.steps:
            if st.get("optimizer") is None:
                raise CheckpointMismatchError(f"checkpoint {path} has no optimizer state")
            self.raw_optimizer.load_state_dict(st["optimizer"])
            self.scheduler.load_state_dict(st["scheduler"])
            if st.get("scaler") is not None and getattr(self.accelerator, "scaler", None):
                self.accelerator.scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        self.batches_consumed = int(st["batches_consumed"])
        self.last_finite = tuple(st["last_finite"]) if st.get("last_finite") else None
        self.losses = list(st.get("losses_tail", []))
        self.elapsed_before = float(st.get("elapsed_train_s", 0.0))
        self.resumed_from = self.step
        log.info("resumed from %s at step %d/%d", path, self.step, self.cfg.steps)

    def _truncate_log(self) -> None:
        """Drop train_log lines after the resumed step (they are repeated)."""
        if self.log_path is None or not self.log_path.exists():
            return
        keep = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if json.loads(line)["step"] <= self.step:
                    keep.append(line)
        atomic_write_text(self.log_path, "".join(l + "\n" for l in keep))

    # --- main loop --------------------------------------------------------------------------
    def _session_elapsed(self) -> float:
        return time.perf_counter() - self._t0 if getattr(self, "_t0", None) else 0.0

    def _check_finite(self, loss: torch.Tensor, step: int) -> float:
        value = loss.detach().float().reshape(1)
        if self.accelerator.num_processes > 1:
            value = self.accelerator.gather(value)
        if not bool(torch.isfinite(value).all()):
            bad = value[~torch.isfinite(value)][0].item()
            if self.last_finite is not None:
                last = f"last finite loss {self.last_finite[1]:.6g} at step {self.last_finite[0]}"
            else:
                last = "no finite loss before it"
            kept = (f"last checkpoint kept at {self.ckpt_path} (step "
                    f"{self._ckpt_step()})" if self.ckpt_path is not None
                    and self.ckpt_path.exists() else "no checkpoint was written yet")
            raise NonFiniteLossError(
                f"loss is {bad} at step {step + 1}/{self.cfg.steps}; {last}; training stopped, "
                f"{kept}. Lower train.lr, enable train.max_grad_norm or use "
                f"train.mixed_precision=no.")
        return float(value.mean())

    def _ckpt_step(self) -> int | str:
        try:
            from sara.weights import load_checkpoint_file

            return int(load_checkpoint_file(self.ckpt_path)["step"])
        except Exception:  # noqa: BLE001 - only for the message
            return "?"

    def train(self) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
        if cfg.steps < 0 or cfg.batch_size < 1 or cfg.grad_accum < 1:
            raise ValueError("train.steps >= 0, train.batch_size >= 1, train.grad_accum >= 1")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if cfg.resume and self.ckpt_path is not None and self.ckpt_path.exists():
            self.load_checkpoint(self.ckpt_path)
        if acc.is_main_process:
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_log()
        self._t0 = time.perf_counter()

        rank, world = acc.process_index, acc.num_processes
        loader = make_loader(self.dataset, cfg.batch_size, cfg.seed, shuffle=cfg.shuffle,
                             start=self.batches_consumed, rank=rank, world=world,
                             collate_fn=self.collate_fn, num_workers=cfg.num_workers)
        batches = iter(loader)
        log_file = (open(self.log_path, "a", encoding="utf-8")
                    if self.log_path is not None and acc.is_main_process else None)
        pbar = None
        if cfg.progress and acc.is_main_process and self.step < cfg.steps:
            from tqdm.auto import tqdm

            pbar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True,
                        mininterval=1.0)
        self.model.train()
        clip = cfg.max_grad_norm is not None and cfg.max_grad_norm > 0
        if clip and getattr(self.method, "compat", None) == "official":
            # the authors' training script effectively never clips SaRA's updates
            log.info("compat=official: gradients are not clipped (train.max_grad_norm ignored)")
            clip = False
        try:
            while self.step < cfg.steps:
                step_losses = []
                for micro in range(cfg.grad_accum):
                    batch = to_device(next(batches), self.device)
                    self.batches_consumed += 1
                    micro_index = self.step * cfg.grad_accum + micro
                    gen = torch.Generator(device=self.device).manual_seed(
                        micro_step_seed(cfg.seed, micro_index, rank, world))
                    sync = micro == cfg.grad_accum - 1
                    ctx = contextlib.nullcontext() if sync else acc.no_sync(self.model)
                    with ctx:
                        with acc.autocast():
                            loss = self.loss_fn(self.model, batch, gen)
                            if hasattr(self.method, "extra_loss"):
                                extra = self.method.extra_loss(self.model, self.step)
                                if extra is not None:
                                    loss = loss + extra
                        step_losses.append(self._check_finite(loss, self.step))
                        acc.backward(loss / cfg.grad_accum)
                grad_norm = None
                if hasattr(self.raw_optimizer, "all_reduce_grad"):
                    # sparse methods average their flat gradient across processes themselves
                    # (once, before clipping, so every process clips the same gradient)
                    self.raw_optimizer.all_reduce_grad()
                if clip:
                    # read the groups each step: SaRA's re-selection replaces its trained leaves
                    params = [p for g in self.raw_optimizer.param_groups for p in g["params"]]
                    grad_norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    grad_norm = float(grad_norm) if grad_norm is not None else None
                self.optimizer.step()
                if not getattr(self.optimizer, "step_was_skipped", False):
                    with warnings.catch_warnings():  # accelerate wraps optimizer.step (benign)
                        warnings.filterwarnings("ignore", message=".*optimizer.step.*")
                        self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                if hasattr(self.method, "on_step_end"):
                    self.method.on_step_end(self.step, cfg.steps)

                loss_v = float(np.mean(step_losses))
                self.losses.append(loss_v)
                self.last_finite = (self.step, loss_v)
                lr = float(self.scheduler.get_last_lr()[0])
                rec = {"step": self.step, "loss": loss_v, "lr": lr,
                       "elapsed_s": round(self.elapsed_before + self._session_elapsed(), 4)}
                if grad_norm is not None:
                    rec["grad_norm"] = grad_norm if math.isfinite(grad_norm) else None
                if log_file is not None:
                    log_file.write(json.dumps(rec) + "\n")
                    log_file.flush()
                if pbar is not None:
                    pbar.update(1)
                    if self.step % max(1, cfg.log_every) == 0 or self.step == cfg.steps:
                        pbar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.2e}", refresh=False)
                if acc.is_main_process and self.log_fns and (
                        self.step % max(1, cfg.log_every) == 0 or self.step == cfg.steps):
                    for f in self.log_fns:
                        f({"train/loss": loss_v, "train/lr": lr}, self.step)
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
                        and self.step < cfg.steps):
                    self.save_checkpoint()
        except KeyboardInterrupt as e:
            e.sara_step = self.step  # for "interrupted at step N" (sara.cli)
            raise
        finally:
            if pbar is not None:
                pbar.close()
            if log_file is not None:
                log_file.close()
        session = self._session_elapsed()
        ckpt = None
        if self.resumed_from is None or self.resumed_from < cfg.steps:
            ckpt = self.save_checkpoint(final=True)
        elif self.ckpt_path is not None:
            ckpt = self.ckpt_path
        peak, kind = peak_memory(self.device)
        tail = self.losses[-max(1, min(50, cfg.steps // 10)):]
        return TrainResult(
            steps=self.step,
            final_loss=self.losses[-1] if self.losses else None,
            final_loss_mean=float(np.mean(tail)) if tail else None,
            resumed_from=self.resumed_from,
            train_time_s=self.elapsed_before + session,
            session_time_s=session,
            peak_memory_bytes=peak, peak_memory_kind=kind,
            mixed_precision=acc.mixed_precision, device=str(self.device),
            checkpoint=str(ckpt) if ckpt else None,
            train_log=str(self.log_path) if self.log_path else None,
            num_processes=acc.num_processes,
        )


def read_train_log(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]
