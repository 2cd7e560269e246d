"""Benchmarks of diffstack against diffusers: `python -m bench --help`."""
