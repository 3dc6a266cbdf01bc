"""`python -m dti ...` is `python launch.py ...`."""

from dti.run.cli import main

main()
