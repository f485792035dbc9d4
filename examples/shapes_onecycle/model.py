"""A small ResNet with BatchNorm on synthetic shapes, trained with OneCycleLR and gradient clipping.

OneCycleLR is made to step every optimizer step: scorch does so by default, and the schedule is sized
from the run (`self.scorch.total_steps`, set by scorch before __init__), so --epochs and --batch-size
change nothing here. Clip with --clip-grad-norm 1.0 (see the README's examples table).
"""

import torch

SHAPES = ("square", "disc", "cross", "ring")


class Residual(torch.nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False), torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
            torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False), torch.nn.BatchNorm2d(channels))

    def forward(self, x):
        return torch.relu(x + self.body(x))


class Network(torch.nn.Module):
    def __init__(self, channels: int = 16):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, channels, 3, padding=1, bias=False), torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
            Residual(channels), torch.nn.MaxPool2d(2), Residual(channels), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(channels, len(SHAPES)))

    def forward(self, inputs):
        return [self.body(inputs[0])]


class Socket:
    def __init__(self, model, max_lr: float = 0.2):
        self.model = model
        self.train_modules = torch.nn.ModuleList([model])
        self.optimizer = torch.optim.SGD(model.parameters(), lr=max_lr / 25, momentum=0.9, weight_decay=5e-4, nesterov=True)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=max_lr, total_steps=self.scorch.total_steps)

    def criterion(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs[0], targets[0])

    def metrics(self, outputs, targets):
        right = outputs[0].argmax(1) == targets[0]
        return {"main": right.float().mean(), "per_shape": torch.stack([right[targets[0] == k].float().mean()
                                                                          for k in range(len(SHAPES))])}

    def process(self, inputs, outputs):
        return {"images": {"input": inputs[0][0]}, "texts": {"guess": SHAPES[int(outputs[0][0].argmax())]}}
