"""Entry point of `python -m streamstore.testing`."""

from streamstore.testing._cli import main

main()
