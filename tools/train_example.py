#!/usr/bin/env python
"""Train weightcodec's example model: the digits MLP on scikit-learn's handwritten digits.

The model (``weightcodec.evaluation.models.digits_mlp``: 64 -> 512 -> 512 -> 10, ReLU, plain
``torch.nn.Sequential``) is trained on the fixed *train* split of ``sklearn.datasets.load_digits``
(bundled with scikit-learn, nothing is downloaded), on CPU with fixed seeds, and saved as a
float32 state_dict. The test split is only used to report accuracy at the end.

Example:
    python tools/train_example.py --out data/digits_mlp.pt
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

try:
    import weightcodec.evaluation  # noqa: F401
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from weightcodec.evaluation.datasets import digits, digits_arrays
from weightcodec.evaluation.metrics import evaluate
from weightcodec.evaluation.models import digits_mlp


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Train the digits-mlp example model (scikit-learn digits, CPU, fixed seeds) "
        "and save it as a float32 state_dict.",
    )
    parser.add_argument("--out", type=Path, default=Path("data/digits_mlp.pt"),
                        help="where to write the state_dict (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=1e-4,
                        help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    return parser.parse_args(argv)


def seed_everything(seed: int) -> None:
    """Seed every random generator the training uses and force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def train(epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int) -> nn.Module:
    """Return a digits MLP trained on the train split of the fixed digits split."""
    seed_everything(seed)
    features, labels = digits_arrays("train")
    inputs = torch.from_numpy(features)
    targets = torch.from_numpy(labels)
    model = digits_mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_function = nn.CrossEntropyLoss()
    shuffle_generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=shuffle_generator)
        epoch_loss = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_function(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(batch)
        scheduler.step()
        if (epoch + 1) % 10 == 0 or epoch == 0:
            print(f"epoch {epoch + 1:3d}/{epochs}  train loss {epoch_loss / len(order):.4f}")
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """Train, report accuracy, save the state_dict; returns the process exit code."""
    args = parse_args(argv)
    torch.set_num_threads(1)  # bit-identical results do not depend on the machine's core count
    started = time.perf_counter()
    model = train(args.epochs, args.batch_size, args.lr, args.weight_decay, args.seed)
    elapsed = time.perf_counter() - started

    train_accuracy = evaluate(model, digits(split="train"))
    test_accuracy = evaluate(model, digits(split="test"))
    print(f"trained in {elapsed:.1f} s")
    print(f"train: top-1 {train_accuracy['top1']:.2f} %  top-5 {train_accuracy['top5']:.2f} %  "
          f"(n={train_accuracy['n']})")
    print(f"test:  top-1 {test_accuracy['top1']:.2f} %  top-5 {test_accuracy['top5']:.2f} %  "
          f"(n={test_accuracy['n']})")

    state_dict = {name: tensor.detach().to(torch.float32).contiguous().clone()
                  for name, tensor in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {sum(t.numel() for t in state_dict.values())} "
          "float32 parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
