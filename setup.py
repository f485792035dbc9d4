"""Only what pyproject.toml cannot say: the dashboard's package `scorch_tui` lives in the folder tui/.

Everything else (name, version, dependencies, entry points) is in pyproject.toml's [project].
"""

from setuptools import setup

setup(
    packages=["scorch", "scorch.callbacks", "scorch.telemetry", "scorch_tui", "scorch_tui.screens", "scorch_tui.widgets"],
    package_dir={"scorch_tui": "tui"},
    package_data={"scorch": ["py.typed"], "scorch_tui": ["*.tcss", "py.typed"]},
)
