"""Train weightcodec's example model: the digits MLP on scikit-learn's handwritten digits.

The model (the registry's ``digits-mlp``, :func:`weightcodec.evaluation.models.digits_mlp`:
64 -> 512 -> 512 -> 10, ReLU, plain ``torch.nn.Sequential``)
is trained on the fixed *train* split of ``sklearn.datasets.load_digits``
(bundled with scikit-learn, nothing is downloaded), on CPU with fixed seeds, and saved as a
float32 state_dict. The test split is only used to report accuracy at the end.

Example:
    python -m tools.train_example --out data/digits_mlp.pt
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn

from weightcodec.evaluation import digits, digits_arrays, evaluate, get_model_spec

MODEL = "digits-mlp"


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
    model = get_model_spec(MODEL).build()
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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("data/digits_mlp.pt"),
              show_default=True, help="Where to write the state_dict.")
@click.option("--epochs", type=click.IntRange(min=1), default=60, show_default=True, help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Mini-batch size.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="AdamW learning rate.")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True, help="AdamW weight decay.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def main(out, epochs, batch_size, lr, weight_decay, seed):
    """Train the digits-mlp example model (scikit-learn digits, CPU, fixed seeds) and save it as a
    float32 state_dict."""
    torch.set_num_threads(1)  # bit-identical results do not depend on the machine's core count
    started = time.perf_counter()
    model = train(epochs, batch_size, lr, weight_decay, seed)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, out)  # to the path (not atomic_write): the archive is named after the file, as committed
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.2f} MB, {sum(t.numel() for t in state_dict.values())} "
          "float32 parameters)")


if __name__ == "__main__":
    main()
