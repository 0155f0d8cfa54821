"""Tools: the benchmark and its worker, the gradient-check catalogue, the PyTorch U-Net oracle."""
