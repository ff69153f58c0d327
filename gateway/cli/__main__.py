"""`python -m gateway.cli` runs the tiergate command (useful before the console script exists)."""

from gateway.cli import main

main()
