"""``python -m tlkit`` runs the CLI."""

from tlkit.cli import main

main()
