"""The Hydra config tree of dti (launch.yaml and one folder per group), shipped as package data `dti.conf`."""
