"""``python -m tlkit`` runs the CLI."""

from tlkit.cli import main

if __name__ == "__main__":
    main()
