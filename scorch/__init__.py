"""scorch: train PyTorch models from a model file and a dataset file, and watch them live.

Importing this package stays light (no torch): the dashboard imports
`scorch.telemetry.protocol`, and start-up over SSH must stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
