"""Training: the loop, its batches, the foundation (stage 0, heads), run identity and store, typed recipes, experiments."""
