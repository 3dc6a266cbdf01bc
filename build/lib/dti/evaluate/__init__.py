"""After training: the prompt sets, protocol sampling with the trained concept, and the scores of the samples."""
