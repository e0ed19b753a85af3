"""hashbench: a benchmark suite for hashing-based recommendation."""

__version__ = "0.1.0"
