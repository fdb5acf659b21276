"""``python -m confide`` is the ``confide`` command."""

from confide.cli.main import main

main()
