"""The dashboard's screens: the run view, the run picker, and the help and stop dialogs."""
