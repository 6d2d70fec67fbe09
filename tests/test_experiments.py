"""conf/experiment/*.yaml and experiments/*.sh: every experiment composes with Hydra, its sweep
expands to distinct run directories (no two jobs of any experiment share one), the scaling and
merging runs point at style runs that the style sweep produces, each script is valid bash, and
every experiment script runs through the one runner (experiments/run_experiment.sh).

Two composition checks:

* ``test_experiment_files_compose`` composes against a copy of ``conf/`` whose primary defaults list
  lets ``+experiment=<id>`` append the experiment after ``_self_`` (what the experiments need), so
  it tests these files whatever the state of ``conf/config.yaml``;
* ``test_plus_experiment_composes_with_the_real_primary_config`` composes against ``conf/`` itself,
  exactly as ``python run.py -m +experiment=<id>`` does.

A missing ``conf/backbone/tiny.yaml`` (the backbone group not written yet) is replaced by a stub
with ``name: tiny`` in the copy; the real-config test skips until it exists.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
EXP_DIR = CONF / "experiment"
SH_DIR = REPO / "experiments"
RUNNER = SH_DIR / "run_experiment.sh"
EXPERIMENTS = sorted(p.stem for p in EXP_DIR.glob("*.yaml"))
GROUPS = ("backbone", "method", "budget", "data", "train", "eval")  # config groups (value = option name)
# the id in the results table (sara.results splits experiment_name at "--")
EXPECTED_ID = {"bvqa": "style", "hyper_lr_piter": "hyper", "hyper_rank_piter": "hyper"}
SPEC_IDS = {"pruning", "migration", "backbone", "style", "ablation", "threshold", "hyper", "bvqa", "scaling",
            "merging", "analysis"}


def _compose(conf_dir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


_CACHE: dict = {}


def _compose_cached(conf_dir: Path, exp: str):
    key = (str(conf_dir), exp)
    if key not in _CACHE:
        _CACHE[key] = _compose(conf_dir, [f"+experiment={exp}"])
    return _CACHE[key]


@pytest.fixture(scope="module")
def conf_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("conf") / "conf"
    shutil.copytree(CONF, dst)
    if not (dst / "backbone" / "tiny.yaml").exists():
        (dst / "backbone").mkdir(exist_ok=True)
        (dst / "backbone" / "tiny.yaml").write_text("# stand-in (tests/test_experiments.py)\nname: tiny\n")
    prim = OmegaConf.load(dst / "config.yaml")
    defaults = [d for d in prim.defaults if not (hasattr(d, "keys") and "experiment" in d)]
    prim.defaults = [d for d in defaults if d != "_self_"] + ["_self_"]
    OmegaConf.save(prim, dst / "config.yaml")
    return dst


def _parse(k: str, v) -> list:
    """Typed values of one sweep override ``k=v`` (Hydra's own parser)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    ov = OverridesParser.create().parse_override(f"{k}={v}")
    val = ov.value()
    return list(val.list) if isinstance(val, ChoiceSweep) else [val]


def _set(cfg, key: str, value) -> None:
    if key in GROUPS:  # a group choice: the run directory only needs its name
        OmegaConf.update(cfg, f"{key}.name", value, merge=False)
    else:
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)


def _spec_scripts() -> list[Path]:
    """The experiment scripts: those that state sweeps and analyses for experiments/run_experiment.sh."""
    return [sh for sh in sorted(SH_DIR.glob("*.sh")) if "run_experiment.sh" in sh.read_text() and sh != RUNNER]


def _dry_run(sh: Path, *args: str) -> list[str]:
    """The commands ``bash experiments/<name>.sh ARGS`` runs (the runner's dry run)."""
    r = subprocess.run(["bash", str(sh), *args], capture_output=True, text=True, cwd="/",
                       env={**os.environ, "EXPERIMENT_DRY_RUN": "1"})
    assert r.returncode == 0, f"{sh.name}: {r.stderr}"
    return r.stdout.splitlines()


def _sh_commands() -> list[tuple[str, list[str]]]:
    """``(experiment, extra overrides)`` of every ``python run.py -m +experiment=...`` the scripts run."""
    out = []
    for sh in _spec_scripts():
        for line in _dry_run(sh):
            words = line.split()
            if words[:3] == ["python", "run.py", "-m"]:
                assert words[3].startswith("+experiment="), line
                out.append((words[3].split("=", 1)[1], words[4:]))
    return out


def _jobs(conf_dir: Path, exp: str, extra: list[str]):
    """Every job of ``python run.py -m +experiment=<exp> <extra>``: (resolved config, run dir)."""
    from sara.record import run_dir_for

    key = ("jobs", str(conf_dir), exp)
    if key not in _CACHE:
        cfg = _compose_cached(conf_dir, exp)
        sweep = dict(OmegaConf.to_container(cfg.hydra.sweeper.params or {}, resolve=False))
        full = OmegaConf.to_container(cfg, resolve=False)
        del full["hydra"]
        OmegaConf.to_container(OmegaConf.create(full), resolve=True)  # every interpolation resolves
        # what run directories depend on (scalars of the groups, the experiment's own keys): cheap to copy
        slim = {k: v for k, v in full.items() if not isinstance(v, dict) or k in ("delta", "diagnostics")}
        for g in GROUPS:
            if isinstance(full.get(g), dict):
                slim[g] = {k: v for k, v in full[g].items() if not isinstance(v, (dict, list))}
        _CACHE[key] = (sweep, OmegaConf.create(slim))
    sweep, base = _CACHE[key]
    params = dict(sweep)
    for tok in extra:  # command-line overrides replace the sweeper's (BasicSweeper semantics)
        k, v = tok.split("=", 1)
        params[k.lstrip("+")] = v
    keys = list(params)
    out = []
    for combo in itertools.product(*[_parse(k, params[k]) for k in keys]):
        c = base.copy()
        for k, v in zip(keys, combo):
            _set(c, k, v)
        out.append((c, run_dir_for(c)))
    return out


def test_every_spec_experiment_has_a_config_and_a_script():
    assert SPEC_IDS <= set(EXPERIMENTS)
    launched = {e for e, _ in _sh_commands()}
    assert set(EXPERIMENTS) <= launched, f"experiment files no script runs: {set(EXPERIMENTS) - launched}"
    for e in SPEC_IDS:
        sh = SH_DIR / f"{e}.sh"
        assert sh.is_file() and sh.stat().st_mode & 0o111, f"{sh} missing or not executable"


def test_every_tuned_rate_run_of_the_scripts_finds_its_rate(conf_copy):
    """Each job of every ``bash experiments/<name>.sh`` sweep that trains at ``train.lr=tuned``
    finds its (method, budget) in the committed rate table, so a script never sweeps a budget a
    method has not been searched at (the run would stop at its start)."""
    from sara.budget import tuned_lr_key
    from sara.lr_search import tuned_lr

    checked = set()
    for exp, extra in _sh_commands():
        for cfg, _ in _jobs(conf_copy, exp, extra):
            plain = OmegaConf.to_container(cfg, resolve=False)
            if str((plain.get("train") or {}).get("lr")) != "tuned":
                continue
            key = tuned_lr_key(plain)
            if key not in checked:
                assert tuned_lr(*key) > 0, (exp, extra, key)
                checked.add(key)
    assert ("tiny", "lt_sft", "5M") in checked  # the style script's smaller budgets are among them


def test_scripts_are_valid_bash():
    for sh in sorted(SH_DIR.glob("*.sh")):
        r = subprocess.run(["bash", "-n", str(sh)], capture_output=True, text=True)
        assert r.returncode == 0, f"{sh.name}: {r.stderr}"


def test_every_experiment_script_states_only_its_sweeps_and_analyses():
    """All scripts but the drivers (all.sh, report.sh) go through the one runner and run nothing
    themselves; the runner is reachable by name too."""
    specs = {sh.name for sh in _spec_scripts()}
    assert specs == {sh.name for sh in SH_DIR.glob("*.sh")} - {"all.sh", "report.sh", "run_experiment.sh"}
    for sh in _spec_scripts():
        code = [ln for ln in sh.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        assert not [ln for ln in code if "python" in ln], f"{sh.name} runs commands itself"
        assert code[-1] == 'source "$(dirname "$0")/run_experiment.sh"', sh.name
        assert _dry_run(RUNNER, sh.stem, "seed=0") == _dry_run(sh, "seed=0")
    r = subprocess.run(["bash", str(RUNNER), "no_such_experiment"], capture_output=True, text=True)
    assert r.returncode == 2 and "ablation" in r.stderr


@pytest.mark.parametrize("sh", _spec_scripts(), ids=lambda p: p.stem)
def test_runner_commands(sh):
    """Arguments go to every run.py call; one results table outputs/results/<name>.csv; every
    analysis is ``python -m analysis.<module>`` on it, writing into outputs/analysis/<name>."""
    name = sh.stem
    lines = _dry_run(sh, "backbone=sd15", "seed=[0,1]")
    runs = [ln for ln in lines if ln.startswith("python run.py -m ")]
    assert runs and all(ln.endswith(" backbone=sd15 seed=[0,1]") for ln in runs)
    table = f"outputs/results/{name}.csv"
    results = [ln for ln in lines if ln.startswith("python -m sara.results ")]
    assert results == [f"python -m sara.results --root outputs/runs --experiment "
                       f"{EXPECTED_ID.get(name, name)} --csv {table}"]
    refine = [ln for ln in lines if " --next" in ln]  # further sweeps asked for after the results
    analyses = [ln.split() for ln in lines if ln.startswith("python -m analysis.") and ln not in refine]
    preflight = [ln for ln in lines if ln.startswith("python -m ") and not ln.startswith(
        ("python -m sara.results ", "python -m analysis.")) and ln not in refine]
    assert all(ln.endswith(" backbone=sd15 seed=[0,1]") for ln in preflight)
    assert lines[:len(preflight)] == preflight  # checks come before any run
    if refine:  # after the first results table, for the backbone of the runs, with the runs' arguments
        assert lines.index(refine[0]) > lines.index(results[0])
        assert all(f"--results {table} --next --backbone sd15 " in ln and "backbone=sd15 seed=[0,1]" in ln
                   for ln in refine)
    assert len(preflight) + len(runs) + len(results) + len(refine) + len(analyses) == len(lines)
    for words in analyses:
        assert (REPO / "analysis" / f"{words[2].split('.', 1)[1]}.py").is_file(), words
        assert words[3:7] == ["--results", table, "--out", f"outputs/analysis/{name}"], words


def test_runner_goes_on_after_a_failed_step_and_reports_it(tmp_path):
    """A failing step does not stop the rest; the exit status is the failure's."""
    (tmp_path / "python").write_text('#!/usr/bin/env bash\necho "python $*"\n[[ "$*" == *table2_ablation* ]] && exit 3\nexit 0\n')
    (tmp_path / "python").chmod(0o755)
    r = subprocess.run(["bash", str(SH_DIR / "ablation.sh")], capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert r.returncode == 3
    assert r.stdout.splitlines()[-1].startswith("python -m analysis.table9_rank ")


def test_report_script_runs_existing_analysis_modules():
    text = (SH_DIR / "report.sh").read_text()
    modules = [ln.split()[1] for ln in text.splitlines() if ln.startswith("run ")]
    assert "claims" in modules and len(modules) >= 19
    for m in modules:
        assert (REPO / "analysis" / f"{m}.py").is_file(), m
    assert "python analysis/" not in text


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_file_header(exp):
    text = (EXP_DIR / f"{exp}.yaml").read_text()
    assert text.splitlines()[0].strip() == "# @package _global_"
    raw = OmegaConf.load(EXP_DIR / f"{exp}.yaml")
    assert "experiment_name" in raw and raw.hydra.sweeper.params


def test_experiment_files_compose(conf_copy):
    """Every experiment's every job composes, names its experiment right and has a run directory
    of its own; scaling/merging read deltas the style sweep writes."""
    seen: dict[Path, str] = {}
    style_dirs, sources = set(), []
    for exp, extra in [(e, []) for e in EXPERIMENTS] + _sh_commands():
        jobs = _jobs(conf_copy, exp, extra)
        assert jobs
        for c, d in jobs:
            name = str(c.experiment_name)
            assert name.split("--")[0] == EXPECTED_ID.get(exp, exp), (exp, name)
            if d in seen and seen[d] != f"{exp} {extra}":
                # the same job listed twice (a script line repeating the file's own sweep) is fine
                assert seen[d].split()[0] == exp, f"{d}: {seen[d]} and {exp} {extra}"
            seen.setdefault(d, f"{exp} {extra}")
            if name == "style" and c.method.name == "sara":
                style_dirs.add(str(d))
            if OmegaConf.select(c, "delta.source") is not None:
                sources.append(str(c.delta.source))
            if OmegaConf.select(c, "delta.merge_with") is not None:
                sources.append(str(c.delta.merge_source))
    assert sources and set(sources) <= style_dirs, sorted(set(sources) - style_dirs)[:3]
    n = {e: len(_jobs(conf_copy, e, [])) for e in ("style", "pruning", "hyper", "scaling", "analysis")}
    assert n == {"style": 90, "pruning": 9, "hyper": 25, "scaling": 35, "analysis": 2}


def test_plus_experiment_composes_with_the_real_primary_config():
    if not (CONF / "backbone" / "tiny.yaml").exists():
        pytest.skip("conf/backbone/tiny.yaml not written yet")
    for exp in EXPERIMENTS:
        try:
            cfg = _compose(CONF, [f"+experiment={exp}"])
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"`python run.py -m +experiment={exp}` does not compose with conf/config.yaml: {e}. "
                        "conf/config.yaml must not list `experiment` in its defaults (keep `_self_` last), so "
                        "`+experiment=<id>` appends the experiment after the primary config.")
        assert str(cfg.experiment_name).split("--")[0] == EXPECTED_ID.get(exp, exp), (
            f"+experiment={exp}: experiment_name is {cfg.experiment_name!r}; the primary config's own keys "
            "override the experiment file (its `_self_` comes after the experiment in the defaults list)")
