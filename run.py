"""Entry point: fine-tune, sample, evaluate, record. See README.md and conf/config.yaml.

    python run.py                                   # tiny backbone, full FT, BarbieCore
    python run.py method=sara budget=5M data.name=Cyberpunk
    python run.py -m method=sara,lora budget=5M,20M # sweep; finished runs are skipped
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning. Must be set before torch loads. On a CPU shared
# with other work, spinning threads made a training step 5x slower (2 cores, load 9: 10 s vs 2 s
# per batch-16 step of the tiny backbone); on an idle machine the cost is small. An explicit
# OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from sara.runs import execute  # noqa: E402


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from sara.cli import run_or_exit  # use-outside: short errors, metrics on the last line

    return run_or_exit(execute, cfg)


if __name__ == "__main__":
    main()
