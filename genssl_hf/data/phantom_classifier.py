"""A small CNN that reads phantom findings: it shows the phantom world is learnable and serves as
an oracle that checks whether generated images show the finding their prompt asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .phantom import iter_phantom_records
from .schema import CHEXPERT5, to_multi_hot


class PhantomFindingCNN(nn.Module):
    """Four strided conv blocks + global average pool + linear head over the five findings."""

    def __init__(self, num_labels: int = len(CHEXPERT5), width: int = 24):
        super().__init__()
        chans = [1, width, width * 2, width * 4, width * 4]
        blocks = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.GELU()]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(chans[-1], num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def phantom_arrays(num_samples: int, size: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) float32 in [0, 1] and multi-hot labels (N, 5) of a phantom stream."""
    images, labels = [], []
    for row in iter_phantom_records(num_samples, size, seed, split=split):
        images.append(row["image"])
        labels.append(to_multi_hot(row["labels"], len(CHEXPERT5)))
    return np.stack(images)[:, None].astype(np.float32) / 255.0, np.stack(labels)


@dataclass
class PhantomOracle:
    model: PhantomFindingCNN
    size: int

    @torch.inference_mode()
    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Finding probabilities (N, 5) for images (N, H, W) or (N, 1, H, W), uint8 or float in [0, 1]."""
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[:, None]
        x = torch.from_numpy(x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0))
        if x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        self.model.eval()
        out = [torch.sigmoid(self.model(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy()

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file(self.model.state_dict(), str(path), metadata={"size": str(self.size)})

    @classmethod
    def load(cls, path: str | Path) -> "PhantomOracle":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as fh:
            size = int(fh.metadata()["size"])
        model = PhantomFindingCNN()
        model.load_state_dict(load_file(str(path)))
        return cls(model.eval(), size)


def train_phantom_oracle(
    num_train: int = 2000,
    size: int = 64,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> PhantomOracle:
    """Train the CNN on ``num_train`` phantoms (train stream); deterministic for a given seed."""
    torch.manual_seed(seed)
    x, y = phantom_arrays(num_train, size, seed, "train")
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = PhantomFindingCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            # No flip augmentation: the side of a finding is part of what it is.
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return PhantomOracle(model.eval(), size)
