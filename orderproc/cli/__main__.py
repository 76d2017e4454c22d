"""``python -m orderproc.cli``: the command line."""

from orderproc.cli import main

main()
