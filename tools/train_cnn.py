"""Train weightcodec's conv-only example network ("fmnist-resnet") on Fashion-MNIST, on CPU.

The architecture is ``weightcodec.evaluation.convnets.fmnist_resnet`` (a ResNet-8 with BatchNorm,
global average pooling and a 1280-weight Linear head); the data are the fixed splits of
``weightcodec.evaluation.imagesets`` (Fashion-MNIST from the Debian package dataset-fashion-mnist):
trained on ``train`` (55 000 images) with light augmentation (random 28x28 crop of the image
zero-padded by 2 pixels, horizontal flip), early-stopped on ``validation`` (5 000), reported on
``test`` (10 000). SGD with Nesterov momentum, one warm-up epoch then cosine decay.

The best-validation float32 state_dict is written to ``--out`` (default
``$WEIGHTCODEC_CACHE/models/fmnist-resnet.pt``) and its training record to the same path with
``.json``, both atomically. Fixed seeds and thread count, deterministic algorithms.

    nice -n 19 python -m tools.train_cnn
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import click
import torch
from torch import nn

from tools.training import CONTEXT_SETTINGS, log, seed_everything
from weightcodec.atomic import atomic_write
from weightcodec.errors import WeightcodecError
from weightcodec.evaluation import convnets, imagesets
from weightcodec.evaluation.cache import models_dir


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch):
        correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / x.shape[0]


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="state_dict path [default: $WEIGHTCODEC_CACHE/models/fmnist-resnet.pt]")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Fashion-MNIST folder [default: $WEIGHTCODEC_FASHION_MNIST or the Debian location]")
@click.option("--epochs", default=1, help="cosine schedule length in epochs")
@click.option("--batch-size", default=128)
@click.option("--lr", default=0.1, help="peak SGD learning rate")
@click.option("--weight-decay", default=5e-4)
@click.option("--patience", default=2, help="stop after this many epochs without a better validation accuracy")
@click.option("--max-minutes", default=55.0, help="wall-time budget for the training loop")
@click.option("--threads", default=2, help="torch threads (the machine is shared)")
@click.option("--seed", default=0)
@click.option("--limit", type=int, default=None, help="use only the first N images of each split (smoke tests)")
@click.option("--eval-every", default=86, help="also measure validation accuracy every N steps inside an epoch")
def main(out: Path | None, data_root: Path | None, epochs: int, batch_size: int, lr: float, weight_decay: float,
         patience: int, max_minutes: float, threads: int, seed: int, limit: int | None, eval_every: int) -> None:
    """Train fmnist-resnet and save its float32 state_dict plus a JSON training record."""
    try:
        run(**locals())
    except WeightcodecError as exc:
        raise click.ClickException(str(exc)) from None


def run(*, out, data_root, epochs, batch_size, lr, weight_decay, patience, max_minutes, threads, seed,
        limit, eval_every) -> None:
    hparams = {k: (str(v) if isinstance(v, Path) else v) for k, v in locals().items()}
    out = out if out is not None else models_dir() / f"{convnets.FMNIST_RESNET_NAME}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    seed_everything(seed, threads)
    folder = imagesets.find_fashion_mnist(data_root)
    hashes = {}
    for name in imagesets.FASHION_MNIST_SHA256:
        hashes[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    train_x, train_y = imagesets.fashion_mnist_tensors("train", limit=limit, root=data_root)
    val_x, val_y = imagesets.fashion_mnist_tensors("validation", limit=limit, root=data_root)
    test_x, test_y = imagesets.fashion_mnist_tensors("test", limit=limit, root=data_root)
    log(f"data: train {tuple(train_x.shape)}, validation {tuple(val_x.shape)}, test {tuple(test_x.shape)}")

    model = convnets.fmnist_resnet()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters; linear layers {convnets.linear_weight_counts(model)}")
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optim = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9, nesterov=True)
    steps_per_epoch = train_x.shape[0] // batch_size
    total_steps = epochs * steps_per_epoch
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)

    curve = []
    best = (-1.0, 0, None)
    stop_reason = "all epochs"
    train_started = time.time()
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(train_x.shape[0], generator=gen)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            progress = step / total_steps
            warm = min(1.0, (step + 1) / steps_per_epoch)
            for group in optim.param_groups:
                group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * progress))
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = imagesets.augment(train_x[idx], gen)
            loss = loss_fn(model(xb), train_y[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            loss_sum += loss.item()
            step += 1
            if eval_every and (i + 1) % eval_every == 0 and i + 1 < steps_per_epoch:
                mid_acc = accuracy(model, val_x, val_y)
                model.train()
                curve.append({"epoch": round(epoch - 1 + (i + 1) / steps_per_epoch, 3), "step": step,
                              "train_loss": loss_sum / (i + 1), "val_top1": mid_acc,
                              "lr_end": optim.param_groups[0]["lr"],
                              "elapsed_s": round(time.time() - train_started, 1)})
                log(f"step {step:5d} (epoch {curve[-1]['epoch']}) train loss {loss_sum / (i + 1):.4f} "
                    f"val top-1 {mid_acc:.2f} %")
        val_acc = accuracy(model, val_x, val_y)
        elapsed = time.time() - train_started
        curve.append({"epoch": epoch, "step": step, "train_loss": loss_sum / steps_per_epoch, "val_top1": val_acc,
                      "lr_end": optim.param_groups[0]["lr"], "elapsed_s": round(elapsed, 1)})
        log(f"epoch {epoch:2d} train loss {loss_sum / steps_per_epoch:.4f} val top-1 {val_acc:.2f} % "
            f"{elapsed / 60:.1f} min")
        if val_acc > best[0]:
            best = (val_acc, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        elif epoch - best[1] >= patience:
            stop_reason = f"validation accuracy flat for {patience} epochs"
            break
        if elapsed > max_minutes * 60:
            stop_reason = f"time budget of {max_minutes} min"
            break
    train_seconds = time.time() - train_started
    model.load_state_dict(best[2])
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    test_acc = accuracy(model, test_x, test_y)
    train_acc = accuracy(model, train_x[:2000], train_y[:2000])
    log(f"best epoch {best[1]} (val {best[0]:.2f} %); test top-1 {test_acc:.2f} %; stop: {stop_reason}")

    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    atomic_write(out, [payload])
    record = {
        "model": convnets.FMNIST_RESNET_NAME,
        "architecture": "weightcodec.evaluation.convnets.fmnist_resnet (ResNet-8, widths 32/64/128, "
                        "BatchNorm kept, GAP + Linear(128, 10))",
        "parameters": n_params,
        "state_dict_tensors": len(state),
        "linear_layers": convnets.linear_weight_counts(model),
        "dataset": {"name": "Fashion-MNIST", "source": f"Debian package {imagesets.FASHION_MNIST_DEBIAN_PACKAGE} "
                    f"{imagesets.FASHION_MNIST_DEBIAN_VERSION}", "licence": "MIT (Zalando SE)",
                    "folder": str(folder), "files_sha256": hashes,
                    "files_match_pinned": hashes == imagesets.FASHION_MNIST_SHA256,
                    "splits": "train 55000 / validation 5000 of the official training set "
                              "(RandomState(0).permutation); test = official 10000",
                    "normalisation": [imagesets.FASHION_MNIST_MEAN, imagesets.FASHION_MNIST_STD]},
        "augmentation": "random 28x28 crop of the image zero-padded by 2 px, horizontal flip p=0.5",
        "hyperparameters": hparams,
        "optimizer": "SGD momentum 0.9 Nesterov, no weight decay on BN/bias, 1 warm-up epoch, cosine decay",
        "curve": curve,
        "stop_reason": stop_reason,
        "best_epoch": best[1],
        "val_top1": best[0],
        "test_top1": test_acc,
        "train_top1_first2000": train_acc,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - started, 1),
        "machine": {"threads": threads, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "note": "shared 2-core machine, niced: timings are pessimistic"},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__},
        "state_dict_sha256": hashlib.sha256(payload).hexdigest(),
        "state_dict_bytes": len(payload),
        "command": "python -m tools.train_cnn " + " ".join(sys.argv[1:]),
    }
    atomic_write(out.with_suffix(".json"), [(json.dumps(record, indent=2) + "\n").encode()])
    log(f"wrote {out} ({len(payload):,} bytes) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
