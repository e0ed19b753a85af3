"""Baseline methods: one module each, registered with hashbench.registry.register."""
