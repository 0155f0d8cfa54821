"""The CPU engine: the reference ops tuned for NumPy on multi-core CPUs."""
