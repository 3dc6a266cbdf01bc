"""Train a DTI concept. Every setting is a Hydra override, e.g.

    python launch.py model=sdxl data.subject=dog data.root=/path/to/dreambooth
    python launch.py +experiment=demo                      # offline, CPU, tiny model, < 30 s
    python launch.py -m optimizer=rsgd,adamw_proj kappa=0,1e-4 data.subject=dog,cat

The same command is installed as `dti` and `python -m dti`.
"""

from dti.run.cli import main

if __name__ == "__main__":
    main()
