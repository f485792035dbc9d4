"""Characters of the Python standard library's own documentation: a text corpus with no download.

Each item is a window of `context` characters and the same window shifted by one (next-character
targets). The text is the docstrings of a fixed list of stdlib modules, so it is the same on every
machine running the same Python; 90 % of it trains, 5 % validates, 5 % is the test set's prompts.
--dataset-args '{"context": 64, "chars": 200000}' sets the window and the corpus size.
"""

import importlib
import inspect

import torch

MODULES = ("argparse", "collections", "functools", "itertools", "json", "logging", "pathlib", "re", "subprocess",
           "threading", "typing", "unittest", "asyncio", "dataclasses", "datetime", "decimal", "email", "http.client",
           "os", "shutil", "socket", "sqlite3", "string", "tarfile", "textwrap", "urllib.parse", "zipfile")


def corpus() -> str:
    parts = []
    for name in MODULES:
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if callable(obj) and getattr(obj, "__module__", None) == module.__name__ else None
            if doc:
                parts.append(doc)
    return "\n\n".join(parts)


class DataSetIndex:
    def __init__(self, path, context: int = 64, chars: int = 200_000):
        text = corpus()[:chars]
        self.codes = torch.tensor([min(ord(c), 127) for c in text], dtype=torch.long)  # ASCII; anything else is 127
        self.context = context
        n = len(self.codes)
        self.cuts = {"train": (0, int(0.9 * n)), "valid": (int(0.9 * n), int(0.95 * n)), "test": (int(0.95 * n), n)}


class DataSet:
    def __init__(self, index, mode="train"):
        self.index, self.mode = index, mode
        start, end = index.cuts[mode]
        self.codes = index.codes[start:end]
        self.starts = range(0, len(self.codes) - index.context - 1, index.context if mode != "train" else index.context // 2)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = self.starts[i]
        window = self.codes[s : s + self.index.context + 1]
        return [window[:-1]], [window[1:]]
