"""Train a DTI concept. Every setting is a Hydra override, e.g.

    python launch.py model=sdxl data.subject=dog data.root=/path/to/dreambooth
    python launch.py +experiment=demo                      # offline, CPU, tiny model, < 1 minute
    python launch.py -m optimizer=rsgd,adamw_proj kappa=0,1e-4 data.subject=dog,cat
"""

import sys

import hydra

import dti  # noqa: F401  (registers the config resolvers)
from dti.cli import check_environment, check_group_choices, run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="launch")
def main(cfg):
    return run_job(cfg)


if __name__ == "__main__":
    check_environment()
    check_group_choices(sys.argv[1:])
    main()
