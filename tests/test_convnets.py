"""The conv-only example network (weightcodec.evaluation.convnets) and the Fashion-MNIST loaders.

Data tests skip cleanly when the Debian package dataset-fashion-mnist is not installed (and
$WEIGHTCODEC_FASHION_MNIST is unset); the trained-model test skips when data/fmnist_resnet.pt is absent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from weightcodec.errors import AssetNotFoundError, DatasetError
from weightcodec.evaluation import convnets, imagesets
from weightcodec.evaluation.datasets import read_idx

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "data" / "fmnist_resnet.pt"


def test_fmnist_resnet_is_conv_only_with_the_documented_shapes():
    torch.manual_seed(0)
    model = convnets.fmnist_resnet().eval()
    assert sum(p.numel() for p in model.parameters()) == 308_074
    linear = convnets.linear_weight_counts(model)
    assert linear == {"fc": 1280}
    assert all(count < convnets.MAX_LINEAR_WEIGHTS for count in linear.values())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    conv_weights = sum(m.weight.numel() for m in convs)
    assert conv_weights / sum(p.numel() for p in model.parameters()) > 0.99
    assert max(m.weight.numel() for m in convs) == 128 * 128 * 9
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    state = model.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert "stages.2.0.shortcut.0.weight" in state and "stages.0.0.bn1.running_var" in state


def test_a_big_linear_head_is_refused():
    with pytest.raises(ValueError, match="classifier"):
        convnets.SmallResNet(widths=(32, 64, 512), blocks=(1, 1, 1), num_classes=10)


def test_augment_keeps_shapes_and_only_shifts_or_flips():
    x = torch.randn(16, 1, 28, 28)
    out = imagesets.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    flips = imagesets.augment(x, torch.Generator().manual_seed(0), pad=0)
    assert all(torch.equal(flips[i], x[i]) or torch.equal(flips[i], x[i].flip(-1)) for i in range(16))
    assert not torch.equal(flips, x)  # some were flipped (p = 0.5 each, seed fixed)
    again = [imagesets.augment(x, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(again[0], again[1])


def test_split_indices_are_fixed_and_disjoint():
    idx = imagesets.split_indices()
    assert {k: len(v) for k, v in idx.items()} == {"train": 55000, "validation": 5000, "calibration": 1000}
    assert not set(idx["train"].tolist()) & set(idx["validation"].tolist())
    assert set(idx["calibration"].tolist()) <= set(idx["validation"].tolist())
    assert np.array_equal(np.sort(np.concatenate([idx["train"], idx["validation"]])), np.arange(60000))
    assert np.array_equal(idx["validation"][:5], imagesets.split_indices()["validation"][:5])


def test_idx_reader_rejects_bad_files_and_missing_data(tmp_path):
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))))
    assert read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(5)))
    with pytest.raises(DatasetError):
        read_idx(bad)
    with pytest.raises(AssetNotFoundError, match="dataset-fashion-mnist"):
        imagesets.find_fashion_mnist(tmp_path)


@pytest.fixture(scope="module")
def data_root():
    try:
        return imagesets.find_fashion_mnist()
    except AssetNotFoundError as exc:
        pytest.skip(str(exc))


def test_loaders_give_the_documented_shapes(data_root):
    loader = imagesets.fashion_mnist("test", limit=300, batch_size=128)
    batches = list(loader)
    assert [x.shape[0] for x, _ in batches] == [128, 128, 44]
    x, y = batches[0]
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    again, _ = next(iter(imagesets.fashion_mnist("test", limit=300, batch_size=128)))
    assert torch.equal(x, again)  # deterministic order
    for split, n in (("train", 55000), ("validation", 5000), ("calibration", 1000), ("test", 10000)):
        images, labels = imagesets.fashion_mnist_arrays(split)
        assert images.shape == (n, 28, 28) and labels.shape == (n,)
    calib, _ = imagesets.fashion_mnist_tensors("calibration")
    val, _ = imagesets.fashion_mnist_tensors("validation")
    assert torch.equal(calib, val[:1000])
    train, _ = imagesets.fashion_mnist_tensors("train")
    assert abs(float(train.mean())) < 0.01 and abs(float(train.std()) - 1) < 0.01
    with pytest.raises(DatasetError):
        imagesets.fashion_mnist("dev")


def test_committed_model_is_accurate(data_root):
    if not COMMITTED.is_file():
        pytest.skip(f"{COMMITTED} is absent")
    model = convnets.fmnist_resnet()
    model.load_state_dict(torch.load(COMMITTED, weights_only=True))
    model.eval()
    x, y = imagesets.fashion_mnist_tensors("test", limit=1000)
    with torch.no_grad():
        top1 = float((model(x).argmax(1) == y).float().mean()) * 100
    assert top1 > 85.0  # measured 88.65 % on all 10 000 (4 epochs, see data/README.md)
