"""`hydra/launcher=packed`. Hydra instantiates only launchers defined in its plugin namespace, so the class lives
here by name; everything it does is dti.sweep.launcher.PackedSweepLauncher."""

from dti.sweep.launcher import PackedSweepLauncher


class PackedLauncher(PackedSweepLauncher):
    """dti's sweep launcher (see dti.sweep.launcher)."""
