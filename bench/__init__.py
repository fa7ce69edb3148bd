"""Benchmark suite of flax2tfjs: `python -m bench` (see bench/__main__.py)."""
