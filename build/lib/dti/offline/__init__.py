"""Stand-ins for what the hub would give, built in code and saved to the cache: tiny random-weight backbones and
evaluators, offline tokenizers, a synthetic subject, and random-weight checkpoints of the real architectures."""
