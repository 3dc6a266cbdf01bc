"""The paper's analyses of the embedding space (norms, neighbours, drift, position probe, residual angles) and its
creative applications (interpolation, magnitude, composition), each a command (`python -m dti.analyze NAME`) and
a function (`analyze(NAME, overrides, runs=...)`); see dti.analyze.cli."""


def analyze(name, overrides=(), runs=None, backbones=None):
    """One analysis in this process; returns {folder, files, summary, ...numbers} (dti.analyze.cli.analyze)."""
    from dti.analyze.cli import analyze as _analyze

    return _analyze(name, overrides, runs, backbones)
