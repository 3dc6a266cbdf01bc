"""Commands that are not the pipeline: benchmarks and the dataset download."""
