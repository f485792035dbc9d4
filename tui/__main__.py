"""python -m scorch_tui: the same as scorch-tui."""

from scorch_tui.cli import main

main()
