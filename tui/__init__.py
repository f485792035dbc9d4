"""scorch-tui, the dashboard (folder tui/, import name scorch_tui). Never imports torch; see docs/tui.md."""
