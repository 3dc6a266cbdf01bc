"""Training one concept, or several packed into one batch: the loop, its checkpoints, the subject's images and
the prompt templates."""
