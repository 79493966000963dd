"""Small conv-only classifiers for the whole-model allocation experiments.

:class:`SmallResNet` is a CIFAR-style ResNet (He et al. 2016, "option B" 1x1 projection
shortcuts) for 28x28 grayscale images: a 3x3 stem, three stages of basic blocks (3x3 conv, BN,
ReLU, 3x3 conv, BN, + shortcut, ReLU) at 28x28, 14x14 and 7x7, global average pooling and one
tiny ``Linear(width, classes)`` (e.g. 1280 weights): nearly all weights are convolutions.

BatchNorm is kept (not folded): the state_dict has each BN's ``weight``, ``bias``,
``running_mean``, ``running_var`` and ``num_batches_tracked``, as a user's trained model would.

:func:`fmnist_resnet` is the architecture of the trained ``fmnist-resnet`` model
(``python -m tools.train_cnn``; see docs/MODELS.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

FMNIST_RESNET_NAME = "fmnist-resnet"
#: Largest number of weights a Linear layer of these "conv-only" networks may have.
MAX_LINEAR_WEIGHTS = 4096


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual connection (1x1 projection if needed)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem conv + three stages of :class:`BasicBlock` + global average pooling + small Linear."""

    def __init__(self, *, in_channels: int = 1, num_classes: int = 10,
                 widths: Sequence[int] = (32, 64, 128), blocks: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError("widths and blocks must have the same, non-zero length")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        channels = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(count):
                layers.append(BasicBlock(channels, width, stride=2 if (i > 0 and j == 0) else 1))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        if self.fc.weight.numel() >= MAX_LINEAR_WEIGHTS:
            raise ValueError(f"classifier has {self.fc.weight.numel()} weights (limit {MAX_LINEAR_WEIGHTS})")
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():  # zero-init the last BN of each block: starts as identity
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def fmnist_resnet() -> SmallResNet:
    """The ``fmnist-resnet`` architecture (a ResNet-8): widths (32, 64, 128), one block per stage.

    308 074 parameters (1.2 MB float32), 37 M multiply-adds per 1x28x28 image; its only Linear
    layer, ``fc``, has 128 x 10 = 1280 weights.
    """
    return SmallResNet(in_channels=1, num_classes=10, widths=(32, 64, 128), blocks=(1, 1, 1))


def linear_weight_counts(model: nn.Module) -> dict[str, int]:
    """``{name: weight count}`` of every ``nn.Linear`` in ``model``."""
    return {name: m.weight.numel() for name, m in model.named_modules() if isinstance(m, nn.Linear)}
