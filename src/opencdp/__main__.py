"""``python -m opencdp`` runs the CLI."""

from opencdp.cli import main

main()
