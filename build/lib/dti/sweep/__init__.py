"""Many jobs: packing a sweep's concepts, the launcher that runs a sweep in one process, GPUs for parallel local
jobs, and the report of a sweep's results."""
