"""The pipeline of one run (what ``run.py`` calls): config -> backbone, data, method -> train ->
the model to sample (merged; delta / pruning hooks) -> samples -> metrics -> ``result.json``.

:func:`execute` skips a run whose directory already holds a complete record, and otherwise runs
the phases below in order; a failure is recorded by :func:`sara.record.records_failure`. The
run-directory layout and the record are :mod:`sara.record`'s; the experiment hooks
(``diagnostics.*``, ``delta.*``) are :mod:`sara.hooks`'; datasets and prompts
:mod:`sara.data.build`'s.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sara.budget import budget_target, resolve_lr, tuned_lr_key
from sara.data.build import build_dataset, ensure_pretrain_reference, eval_prompt_list
from sara.env import cpu_peak_rss_bytes, environment, now_iso, peak_memory, start_wandb
from sara.hooks.delta import apply_delta, load_delta_source
from sara.hooks.diagnostics import (prune, share_below_report, subspace_reports,
                                    subspace_weights_before)
from sara.hooks.migration import MigrationHook
from sara.hooks.schema import hooks_filled, validate_hooks
from sara.io import to_jsonable
from sara.precision import autocast_dtype
from sara.preflight import check_config, check_weights, stamp_weights_id
from sara.record import (RESULT_FILE, RUN_DIR_LEVELS, SAMPLES_DIR, build_record, eval_section,
                         load_result, memory_section, paths_section, records_failure,
                         run_dir_for, run_section, time_section, train_section, write_result)
from sara.rundir import StaleRunError, hold_run_dir

log = logging.getLogger(__name__)

#: Keys whose change does not make a finished run stale.
VOLATILE_KEYS = ("logger", "overwrite", "on_failure", "output_root", "torch_threads", "train.progress",
                 "train.num_workers", "eval.device", "train.device",
                 # how a run is checkpointed / logged does not change it (exact resume);
                 # eval.batch_size is not here: it seeds the samples (chunk c uses seed + c)
                 "train.resume", "train.checkpoint_every", "train.log_every",
                 "train.keep_optimizer_state")


# ------------------------------------------------------------------------------------------------
# entry
# ------------------------------------------------------------------------------------------------
def execute(cfg: Any, run_dir: str | os.PathLike | None = None) -> dict:
    """Run one configured job end to end; return its result record.

    ``run_dir``: default = Hydra's output dir inside a Hydra job, else :func:`run_dir_for`.
    A directory with a complete ``result.json`` is not run again ("already done"). A failure
    writes ``failed.json`` and re-raises (``on_failure=raise``) or returns the failure record
    (``on_failure=record``). A directory holding another config's result is an error
    (:class:`sara.rundir.StaleRunError`) unless ``overwrite=true``; one process at a time owns a
    run directory (:func:`sara.rundir.hold_run_dir`).
    """
    check_config(cfg)  # before anything else: data.name, budget, eval
    run_dir = Path(run_dir) if run_dir is not None else (hydra_run_dir() or run_dir_for(cfg))
    plain = _plain(cfg)
    check_weights(plain.get("backbone") or {})  # no hub call without weights
    stamp_weights_id(plain)  # which weights: part of the run's identity
    with hold_run_dir(run_dir):
        if plain.get("overwrite"):
            log.warning("overwrite=true: clearing %s", run_dir)
            _clear_run_dir(run_dir)
        done = _already_done(run_dir, plain)
        if done is not None:
            return done
        run_dir.mkdir(parents=True, exist_ok=True)
        return _run(cfg, plain, run_dir)


def hydra_run_dir() -> Path | None:
    """The output directory Hydra chose for this job, or None outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except (ImportError, ValueError):  # pragma: no cover
        pass
    return None


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return cfg


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _already_done(run_dir: Path, plain: dict) -> dict | None:
    """The complete record of ``run_dir``, marked ``_already_done`` for the final line; another
    config's result is never this run's (:class:`sara.rundir.StaleRunError`)."""
    done = load_result(run_dir)
    if done is None:
        return None
    diff = [k for k in config_diff(hooks_filled(done.get("config", {})), hooks_filled(plain))
            if not k.startswith(VOLATILE_KEYS)]
    if diff:
        raise StaleRunError(run_dir, diff)
    log.info("already done: %s", run_dir / RESULT_FILE)
    return dict(done, _already_done=True)


def _clear_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        return
    for p in run_dir.iterdir():
        if p.name == ".hydra" or p.name.endswith(".log"):
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


# ------------------------------------------------------------------------------------------------
# the phases
# ------------------------------------------------------------------------------------------------
@records_failure
def _run(cfg: Any, plain: dict, run_dir: Path) -> dict:
    from sara.train import TrainConfig

    t_all = time.perf_counter()
    started = now_iso()
    diag, dcfg = validate_hooks(plain)  # before anything heavy: a bad key fails at once
    seed = int(plain.get("seed", 0))
    tcfg = TrainConfig.from_mapping(plain.get("train"), seed=seed)
    sources = _delta_sources(plain, dcfg)  # fail fast when a delta to load is missing
    accelerator = _start(plain, tcfg, seed)
    t0 = time.perf_counter()
    s = _setup(plain, tcfg, diag, accelerator, run_dir)
    setup_s = time.perf_counter() - t0

    main = accelerator.is_main_process
    wb = start_wandb(plain.get("logger"), run_dir, plain,
                     name="/".join(run_dir.parts[-len(RUN_DIR_LEVELS):])) if main else None
    try:
        tres, diagnostics, weights = _train(s, tcfg, diag, accelerator, run_dir, wb)
        ecfg = plain.get("eval") or {}
        prompts = s.custom.eval_prompts if s.custom is not None else eval_prompt_list(ecfg)
        sampler_module, delta_info = _model_to_sample(s, diag, dcfg, sources, diagnostics, seed,
                                                      sample=bool(prompts and main))
        t0 = time.perf_counter()
        samples, texts = _sample(s, ecfg, prompts, sampler_module, run_dir, seed, tcfg,
                                 accelerator.device, main)
        sample_s = time.perf_counter() - t0
        accelerator.wait_for_everyone()
        t0 = time.perf_counter()
        metrics, eval_info, metrics_note, dataset_dir = _evaluate(
            s, plain, ecfg, texts, run_dir, accelerator.device, main)
        eval_s = time.perf_counter() - t0
        if wb is not None:
            wb.log({f"eval/{k}": v for k, v in metrics.items()
                    if isinstance(v, (int, float))}, step=tres.steps)
    finally:
        if wb is not None:
            wb.finish()

    rss = cpu_peak_rss_bytes() if accelerator.device.type == "cuda" else None
    record = build_record(
        run=run_section(plain, s.backbone.name, s.method, s.n_denoiser, s.budget),
        train=train_section(tres, tcfg, s.lr_record),
        time=time_section(setup_s=setup_s, tres=tres, sample_s=sample_s, eval_s=eval_s,
                          wall_s=time.perf_counter() - t_all),
        memory=memory_section(tres, process_max_rss_bytes=rss),
        evaluation=eval_section(samples, metrics, metrics_note, eval_info),
        paths=paths_section(run_dir, tres, dataset_dir, weights), diagnostics=diagnostics,
        delta=delta_info, config=plain, env=environment(), started_at=started)
    if main:
        write_result(run_dir, record)
        log.info("done: %s (train %.0f s, sample %.0f s, eval %.0f s)", run_dir / RESULT_FILE,
                 tres.train_time_s, sample_s, eval_s)
    accelerator.wait_for_everyone()
    return to_jsonable(record)


def _delta_sources(plain: dict, dcfg: dict | None) -> list[dict]:
    """The trained states ``delta.source`` / ``delta.merge_source`` name (none without delta)."""
    if dcfg is None:
        return []
    bb_name = (plain.get("backbone") or {}).get("name")
    keys = ["source"] + (["merge_source"] if dcfg["merge_source"] is not None else [])
    return [load_delta_source(f"delta.{k}", dcfg[k], plain.get("output_root"), bb_name)
            for k in keys]


def _start(plain: dict, tcfg: Any, seed: int):
    """Threads, seeds and the accelerator of this process."""
    import torch

    from sara.train import make_accelerator, seed_everything

    if plain.get("torch_threads"):
        torch.set_num_threads(int(plain["torch_threads"]))
    seed_everything(seed)
    return make_accelerator(tcfg.mixed_precision, tcfg.device)


@dataclass
class _Setup:
    backbone: Any
    n_denoiser: int
    budget: int | None
    lr_record: dict
    dataset: Any
    dataset_dir: Path | None
    method: Any
    model: Any
    optimizer: Any
    migration: MigrationHook | None
    w0_sub: dict | None
    custom: Any = None  # sara.customisation.Customisation of a DreamBooth / Textual Inversion run


def _setup(plain: dict, tcfg: Any, diag: dict, accelerator, run_dir: Path) -> _Setup:
    """Backbone, budget, learning rate, dataset and the applied method with its optimizer."""
    import hydra.utils

    from sara.backbones import load_backbone
    from sara.methods.base import PrepareContext
    from sara.train import endless_batches

    device, seed = accelerator.device, tcfg.seed
    backbone = load_backbone(plain["backbone"])
    backbone.to(device)
    n_denoiser = int(sum(p.numel() for p in backbone.denoiser.parameters()))
    budget = budget_target(plain.get("budget"), n_denoiser)
    tcfg.lr, lr_record = resolve_lr(tcfg.lr, backbone.denoiser, budget, tuned_lr_key(plain))
    custom = None
    if (plain.get("data") or {}).get("kind") == "subject":  # before the method is applied
        from sara.customisation import Customisation

        custom = Customisation.from_config(plain, backbone, accelerator)
    dataset, dataset_dir = ((custom.dataset, custom.subject_dir) if custom is not None else
                            build_dataset(plain["data"], backbone.resolution, accelerator))
    log.info("run %s: backbone %s (%d denoiser params), %d training items, budget %s",
             run_dir, backbone.name, n_denoiser, len(dataset), budget)
    # W0 of the analysed weights, before the method touches the denoiser (calibration phases too)
    w0_sub = subspace_weights_before(backbone.denoiser, diag, backbone.name)

    def ctx_loss(module, batch):
        with accelerator.autocast():
            return _training_loss(backbone, custom)(module, batch)

    ctx = PrepareContext(
        loss_fn=ctx_loss,
        batches=endless_batches(dataset, tcfg.batch_size, seed + 7919, device=device,
                                shuffle=tcfg.shuffle),
        steps=tcfg.steps, seed=seed,
        extra={"backbone": backbone, "accelerator": accelerator, "run_dir": run_dir,
               "batch_size": tcfg.batch_size, "lr": tcfg.lr,
               "max_grad_norm": tcfg.max_grad_norm, "progress": tcfg.progress and accelerator.is_main_process,
               "class_noun": custom.class_noun if custom is not None else None})
    method = hydra.utils.instantiate(plain["method"], _convert_="all")
    migration = None
    if diag["migration_every"] is not None:  # the initial selection is taken from W0
        migration = MigrationHook(backbone.denoiser, diag["migration_threshold"],
                                  diag["migration_every"], run_dir,
                                  main=accelerator.is_main_process)
    model = method.apply(backbone.denoiser, budget=budget, ctx=ctx)
    optimizer = method.make_optimizer(lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                                      betas=tuple(tcfg.betas))
    return _Setup(backbone, n_denoiser, budget, lr_record, dataset, dataset_dir, method, model,
                  optimizer, migration, w0_sub, custom)


def _training_loss(backbone, custom):
    """The diffusion loss, or a customisation run's (instance + prior-preservation) loss."""
    return custom.training_loss if custom is not None else backbone.training_loss


def _train(s: _Setup, tcfg: Any, diag: dict, accelerator, run_dir: Path, wb):
    """The trainer's result, the diagnostics measured during / right after training, and the path of
    the trained weights written next to result.json (None when nothing was trained)."""
    from sara.train import Trainer

    def loss_fn(module, batch, generator=None):
        return _training_loss(s.backbone, s.custom)(module, batch, generator=generator)

    diagnostics: dict = {}
    if s.migration is not None:
        s.migration.record(0)
        s.migration.install(s.method)
    if tcfg.steps == 0:  # nothing to train (pruning, scaling, merging, pre-trained baselines)
        tres = _no_training(accelerator)
    else:
        log_fns = [lambda m, step: wb.log(m, step=step)] if wb is not None else []
        trainer = Trainer(s.model, s.method, s.optimizer, loss_fn, s.dataset, tcfg,
                          run_dir=run_dir, accelerator=accelerator, log_fns=log_fns)
        tres = trainer.train()
    if s.migration is not None:
        diagnostics["migration"] = s.migration.finish(tres.steps)
    if diag["share_below"]:
        diagnostics.update(share_below_report(s.method, diag["share_below_threshold"]))
    # the trained weights in the ecosystem's format, next to result.json
    weights = s.method.save_weights(run_dir) if tres.steps and accelerator.is_main_process else None
    return tres, diagnostics, weights


def _no_training(accelerator) -> Any:
    """The trainer's result for ``train.steps=0``: nothing trained, nothing checkpointed."""
    from sara.train import TrainResult

    peak, kind = peak_memory(accelerator.device)
    return TrainResult(steps=0, final_loss=None, final_loss_mean=None, resumed_from=None,
                       train_time_s=0.0, session_time_s=0.0, peak_memory_bytes=peak,
                       peak_memory_kind=kind, mixed_precision=accelerator.mixed_precision,
                       device=str(accelerator.device), checkpoint=None, train_log=None,
                       num_processes=accelerator.num_processes)


def _model_to_sample(s: _Setup, diag: dict, dcfg: dict | None, sources: list[dict],
                     diagnostics: dict, seed: int, sample: bool):
    """The merged model, with a loaded delta / pruning applied (None when nothing needs it);
    the subspace diagnostics measured on it go into ``diagnostics``."""
    sampler_module = None
    delta_info = None
    if sample or diag["subspace"] or dcfg is not None or diag["prune_threshold"] is not None:
        sampler_module = s.method.merged(s.model)
    if dcfg is not None:
        delta_info = apply_delta(sampler_module, dcfg, sources)
        sources.clear()  # free the loaded states
    if diag["subspace"]:
        diagnostics.update(subspace_reports(s.w0_sub, sampler_module, diag, seed))
    if diag["prune_threshold"] is not None:
        diagnostics["prune"] = prune(sampler_module, diag["prune_threshold"])
    return sampler_module, delta_info


def _sample(s: _Setup, ecfg: dict, prompts: list[str], sampler_module, run_dir: Path, seed: int,
            tcfg: Any, device, main: bool) -> tuple[dict, list[str]]:
    """One image per evaluation prompt into ``samples/``; ``(summary, prompted texts)``."""
    from sara.sample import sample_to_folder

    if not (prompts and main):
        return {"num_images": 0, "skipped": True, "time_s": 0.0, "dir": None}, []
    prefix = ecfg.get("prefix") or ""
    samples = sample_to_folder(
        s.backbone, prompts, run_dir / SAMPLES_DIR, denoiser=sampler_module,
        prefix=prefix, num_inference_steps=ecfg.get("num_inference_steps"),
        guidance_scale=ecfg.get("guidance_scale"), seed=int(ecfg.get("seed", seed)),
        batch_size=int(ecfg.get("batch_size", 16)),
        autocast_dtype=autocast_dtype(ecfg.get("autocast"), device),
        progress=tcfg.progress)
    return samples, [prefix + p for p in prompts]


def _evaluate(s: _Setup, plain: dict, ecfg: dict, texts: list[str], run_dir: Path, device,
              main: bool) -> tuple[dict, Any, str | None, Path | None]:
    """``eval.metrics`` of the samples: ``(metrics, eval_info, note, reference folder)``."""
    metrics: dict = {}
    eval_info = None
    metrics_note = None
    dataset_dir = s.dataset_dir
    wanted = list(ecfg.get("metrics") or [])
    if not (wanted and texts and main):
        return metrics, eval_info, metrics_note, dataset_dir
    if s.custom is not None:  # CLIP-I / CLIP-T / subject fidelity / language drift
        out = dict(s.custom.evaluate(run_dir / SAMPLES_DIR, texts, wanted, str(device)))
        eval_info = out.pop("eval_info", None)
        return out, eval_info, metrics_note, dataset_dir
    try:
        from sara.evaluate import evaluate
    except ModuleNotFoundError as e:
        if e.name not in ("sara.evaluate",):
            raise
        metrics_note = "sara.evaluate is not installed: metrics skipped"
        log.warning(metrics_note)
        return metrics, eval_info, metrics_note, dataset_dir
    if (dataset_dir is None and "fid" in wanted
            and (plain.get("data") or {}).get("kind") == "pretrain"):
        # FID of the pre-training domain: against its fixed validation split
        dataset_dir = ensure_pretrain_reference(plain["data"], s.backbone.resolution)
    edev = ecfg.get("device", "auto")
    edev = str(device) if edev in (None, "auto") else edev
    out = dict(evaluate(run_dir / SAMPLES_DIR, texts,
                        str(dataset_dir) if dataset_dir else None, wanted, edev) or {})
    eval_info = out.pop("eval_info", None)
    return out, eval_info, metrics_note, dataset_dir
