"""A small CNN for scikit-learn's 8x8 digits: the "realistic" workload of bench/overhead.py.

Two 3x3 convolutions, max pooling, dropout and two linear layers: enough work
per step that a training tool's bookkeeping should vanish in it. Pairs with
examples/digits/dataset.py (no download). It follows the scorch model-file
contract, so `scorch-train --model bench/digits_cnn.py` trains it too.
"""

from __future__ import annotations

import torch


class Network(torch.nn.Module):
    def __init__(self, channels: int = 32, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, channels, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(channels, 2 * channels, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classify = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(2 * channels * 16, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 10),
        )

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.classify(self.features(inputs[0]))]


class Socket:
    def __init__(self, model: Network) -> None:
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.SGD(self.train_modules.parameters(), lr=0.05, momentum=0.9)

    def criterion(self, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> dict:
        accuracy = (outputs[0].argmax(dim=1) == targets[0]).float().mean()
        return {"main": accuracy, "accuracy": accuracy}

    def process(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> dict:
        # Test inference: the first image of each test batch and the network's guess, for TensorBoard.
        guess = int(outputs[0][0].argmax())
        return {"images": {"digit": inputs[0][0]}, "texts": {"prediction": f"predicted {guess}"}}
