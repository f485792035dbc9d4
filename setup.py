"""pytorch-scorch: the package is `scorch` (the trainer) and `scorch_tui` (the dashboard, folder tui/)."""

import re

from setuptools import setup

version = re.search(r'__version__ = "([^"]+)"', open("scorch/__init__.py").read()).group(1)

setup(
    name="pytorch-scorch",
    version=version,
    description="Train PyTorch models from a model file and a dataset file; watch and steer them live from a terminal.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["scorch", "scorch.callbacks", "scorch.telemetry", "scorch_tui", "scorch_tui.screens", "scorch_tui.widgets"],
    package_dir={"scorch_tui": "tui"},
    package_data={"scorch_tui": ["*.tcss"]},
    install_requires=[
        "torch>=2.1",
        "numpy",
        "pyzmq>=25",
        "tensorboardX>=2.6",
        "psutil>=5.9",
        "textual>=0.80",
    ],
    extras_require={
        "examples": ["scikit-learn"],
        # bench/overhead.py compares against Lightning when it is installed.
        "bench": ["lightning==2.6.6", "scikit-learn"],
        "gpu": ["nvidia-ml-py"],
        # Horovod 0.28.1 needs a patched build against torch 2.x: run scripts/install-horovod.sh.
        "horovod": [],
        "test": [
            "pytest>=7",
            "pytest-timeout",
            "hypothesis",
            "pytest-textual-snapshot",
            "tensorboard",
            "scikit-learn",
            "nvidia-ml-py",
        ],
    },
    entry_points={
        "console_scripts": [
            "scorch-train=scorch.cli:main",
            "scorch-ctl=scorch.ctl:console_main",
            "scorch-tui=scorch_tui.cli:main",
        ],
    },
)
