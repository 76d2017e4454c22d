"""``python -m orderproc``: the command line."""

from orderproc.cli import main

main()
