"""``python -m pdca`` runs the command line."""

from .cli import main

main()
