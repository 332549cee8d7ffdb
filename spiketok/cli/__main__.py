"""`python -m spiketok.cli` runs the `spiketok` command."""

from . import main

main()
