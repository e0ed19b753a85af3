"""One module per CLI command; each registers itself with hashbench.cli.command."""
