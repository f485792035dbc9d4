"""Two inputs, two outputs: a class and a regression value from a vector and a sequence.

This is also the tiny model of bench/overhead.py, where per-step overhead dominates.
"""

import torch


class Network(torch.nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.vector = torch.nn.Linear(16, width)
        self.sequence = torch.nn.Linear(8, width)
        self.classify = torch.nn.Linear(2 * width, 4)
        self.regress = torch.nn.Linear(2 * width, 1)

    def forward(self, inputs):
        vector, sequence = inputs
        h = torch.cat([torch.relu(self.vector(vector)), torch.relu(self.sequence(sequence)).mean(dim=1)], dim=1)
        return [self.classify(h), self.regress(h).squeeze(1)]


class Socket:
    def __init__(self, model):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.SGD(self.train_modules.parameters(), lr=0.05, momentum=0.9)

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0], targets[0]) + torch.nn.functional.mse_loss(outputs[1], targets[1])

    def metrics(self, outputs, targets):
        accuracy = (outputs[0].argmax(dim=1) == targets[0]).float().mean()
        mse = torch.nn.functional.mse_loss(outputs[1], targets[1])
        return {"main": accuracy, "mse": mse}
