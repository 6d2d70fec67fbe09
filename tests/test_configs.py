"""Every config of every group composes (files are discovered, so new methods, backbones and
experiments are covered automatically); method configs instantiate where their class exists."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF
from sara.record import run_dir_for
from sara.train import TrainConfig

# groups whose configs must carry a `name` (it is part of the run directory)
NAMED_GROUPS = ("backbone", "data", "method", "budget")
# extra overrides a config needs to compose into a runnable config (mandatory ??? values)
EXTRA = {("data", "folder"): ["data.name=MyStyle"]}
# hydra plugin configs and the module that provides them
PLUGINS = {"submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
           "submitit_local": "hydra_plugins.hydra_submitit_launcher",
           "joblib": "hydra_plugins.hydra_joblib_launcher"}


def options():
    out = []
    for f in sorted(CONF.rglob("*.yaml")):
        rel = f.relative_to(CONF)
        if len(rel.parts) < 2:
            continue  # the primary config
        out.append(("/".join(rel.parts[:-1]), rel.stem))
    return out


OPTIONS = options()
# groups the primary config selects (group=name); any other group is appended (+group=name)
PRIMARY_GROUPS = {str(d).split()[-1] if isinstance(d, str) else str(next(iter(d))).split("@")[0].split()[-1]
                  for d in OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))["defaults"]
                  if not isinstance(d, str) or d != "_self_"}


def compose(overrides, hydra_cfg=False):
    from hydra import compose as hcompose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hcompose(config_name="config", overrides=overrides, return_hydra_config=hydra_cfg)


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    for g in ("backbone", "data", "method", "budget", "train", "eval", "hydra/launcher"):
        assert g in groups, g


def test_primary_config_composes():
    cfg = compose([], hydra_cfg=True)
    plain = OmegaConf.to_container(cfg, resolve=False)
    del plain["hydra"]
    OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    assert cfg.hydra.run.dir == str(run_dir_for(cfg))
    assert cfg.method.name == "sara" and cfg.data.name == "Expedition"
    assert cfg.data.caption_prefix == "Expedition style, "


@pytest.mark.parametrize("group,name", OPTIONS, ids=[f"{g}={n}" for g, n in OPTIONS])
def test_config_composes(group, name):
    if group.startswith("hydra/"):
        base = OmegaConf.load(CONF / group / f"{name}.yaml")
        for d in base.get("defaults", []):
            mod = PLUGINS.get(str(d))
            if mod and importlib.util.find_spec(mod) is None:
                pytest.skip(f"{group}={name} needs {mod} (pip install -e '.[slurm]')")
        cfg = compose([f"{group}={name}"], hydra_cfg=True)
        assert cfg.hydra.launcher._target_
        return
    prefix = "" if group in PRIMARY_GROUPS else "+"  # others are appended: +experiment=<id>
    cfg = compose([f"{prefix}{group}={name}", *EXTRA.get((group, name), [])], hydra_cfg=True)
    hydra_node = cfg.hydra
    plain = OmegaConf.to_container(cfg, resolve=False)
    del plain["hydra"]
    resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True,
                                      throw_on_missing=True)
    for g in NAMED_GROUPS:
        assert resolved.get(g) is None or resolved[g].get("name"), f"{g} config without a name"
    # the run directory is determined and Hydra's rule agrees with sara.record.run_dir_for
    assert hydra_node.run.dir == str(run_dir_for(resolved))
    TrainConfig.from_mapping(resolved["train"])  # no unknown training keys
    if group == "data":
        assert resolved["data"]["kind"] in ("style", "folder", "pretrain", "subject", "camera_motion", "video_folder")


METHODS = [n for g, n in OPTIONS if g == "method"]


@pytest.mark.parametrize("name", METHODS)
def test_method_config_instantiates(name):
    from hydra.utils import instantiate

    from sara.methods.base import Method

    cfg = compose([f"method={name}"])
    target = cfg.method._target_
    module = target.rsplit(".", 1)[0]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            pytest.skip(f"{target}: module not written yet")
        raise
    m = instantiate(cfg.method)
    assert isinstance(m, Method)
    assert m.name == cfg.method.name


def test_train_paper_selects_paper_eval_and_overrides_win():
    cfg = compose(["train=paper"])
    assert (cfg.train.steps, cfg.train.batch_size, cfg.eval.num_prompts) == (5000, 4, 500)
    assert cfg.train.lr_scheduler == "cosine"
    cfg = compose(["train=smoke"])
    assert cfg.eval.num_prompts == 4 and list(cfg.eval.metrics) == []
    cfg = compose(["train=smoke", "eval=default"])
    assert cfg.eval.num_prompts == 100


def test_overrides_from_readme():
    cfg = compose(["method=full", "budget=5M", "data.name=Cyberpunk", "seed=2"], hydra_cfg=True)
    assert cfg.hydra.run.dir == "outputs/runs/default/tiny/Cyberpunk/full/5M/seed2"
    assert cfg.data.caption_prefix == "Cyberpunk style, "


def _swept(cfg, key: str) -> list[str]:
    """The names a sweep runs for config group ``key`` (else the composed one)."""
    params = (OmegaConf.select(cfg, "hydra.sweeper.params") or {})
    value = params.get(key)
    return [v.strip() for v in str(value).split(",")] if value is not None else [str(cfg[key].name)]


@pytest.mark.parametrize("exp", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_tuned_rate_experiments_find_a_rate_for_every_swept_method(exp):
    """An experiment with train.lr=tuned must find each swept method's rate in the committed table
    (results/lr/tiny.yaml): a method without a search of its own names one with train.lr_of."""
    from sara.lr_search import tuned_lr
    from sara.budget import tuned_lr_key

    cfg = compose([f"+experiment={exp}"], hydra_cfg=True)
    if str(cfg.train.lr) != "tuned":
        pytest.skip(f"{exp}: train.lr={cfg.train.lr}")
    for method in _swept(cfg, "method"):
        for budget in _swept(cfg, "budget"):
            run = compose([f"+experiment={exp}", f"method={method}", f"budget={budget}"])
            plain = OmegaConf.to_container(run, resolve=False)
            assert tuned_lr(*tuned_lr_key(plain)) > 0
