"""``python -m streamstore``: the same command line as the ``streamstore`` script."""

from streamstore.cli import main

main()
