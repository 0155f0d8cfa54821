"""Training: options, the loop, checkpoints, data-parallel processes, gradient traces, plots."""
