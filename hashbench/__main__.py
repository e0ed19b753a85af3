"""`python -m hashbench ...` = the `hashbench` command."""

from hashbench.cli import main

main()
