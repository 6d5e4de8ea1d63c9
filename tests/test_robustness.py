"""Corruptions (paper Table 8): determinism, documented severities, the robustness table."""

import numpy as np
import pytest
import torch

from genssl_hf.evaluation.robustness import (
    CORRUPTIONS,
    SEVERITY_PARAMS,
    corrupt,
    format_robustness_table,
    robustness_table,
)

torch.set_num_threads(1)


def _images(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = 0.3 + 0.4 * ((xx // 4 + yy // 4) % 2).float()  # a checkerboard: blur and JPEG change it
    return (base + 0.05 * torch.rand(n, 1, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corruptions_are_deterministic_bounded_and_grow_with_severity(name):
    # 112 px: blur sizes are defined at 224 px and scale with the side, so at 32 px severity 1
    # of the blur is (correctly) below one pixel and changes nothing
    x = _images(size=112)
    out = {s: corrupt(x, name, s, seed=1) for s in (1, 3, 5)}
    for s, y in out.items():
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.min() >= 0 and y.max() <= 1
        assert torch.equal(y, corrupt(x, name, s, seed=1))
    change = [float((out[s] - x).abs().mean()) for s in (1, 3, 5)]
    assert change[0] > 0
    assert change[0] < change[1] < change[2], change


def test_contrast_by_hand_and_severity_table():
    x = _images(2)
    y = corrupt(x, "contrast", 2)  # factor 0.6 around each image's mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(y, (x - mean) * 0.6 + mean)
    assert SEVERITY_PARAMS["jpeg"] == (80, 60, 40, 20, 10)
    assert set(SEVERITY_PARAMS) == set(CORRUPTIONS) and all(len(v) == 5 for v in SEVERITY_PARAMS.values())
    with pytest.raises(KeyError, match="unknown corruption"):
        corrupt(x, "snow", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "jpeg", 6)


def test_noise_seed_changes_noise():
    x = _images(2)
    assert not torch.equal(corrupt(x, "gaussian_noise", 3, seed=0), corrupt(x, "gaussian_noise", 3, seed=1))


def test_robustness_table_reports_drop_per_corruption():
    x = _images(40, seed=3)
    # a "model" reading the checkerboard contrast: images whose local contrast is high are positive
    bright = torch.arange(40) % 2 == 0
    x[bright] = (x[bright] - 0.5) * 1.0 + 0.5
    x[~bright] = (x[~bright] - 0.5) * 0.5 + 0.5
    y = bright.numpy().astype(int)[:, None]

    def predict(batch):
        return batch.std(dim=(1, 2, 3)).numpy()[:, None] * 4

    result = robustness_table(
        predict,
        x,
        y,
        metric_name="mean_auc",
        corruptions=("contrast", "gaussian_noise"),
        severities=(1, 5),
        batch_size=16,
    )
    assert result["clean"] == pytest.approx(1.0)
    row = result["table"]["contrast"]
    assert set(row["per_severity"]) == {1, 5}
    assert row["mean"] == pytest.approx(np.mean(list(row["per_severity"].values())))
    assert row["drop"] == pytest.approx(result["clean"] - row["mean"])
    assert result["average_drop"] == pytest.approx(np.mean([r["drop"] for r in result["table"].values()]))
    assert all(0.0 <= v <= 1.0 for r in result["table"].values() for v in r["per_severity"].values())
    md = format_robustness_table(result)
    assert "| contrast |" in md and "| gaussian_noise |" in md and "**average**" in md and "clean: 100.0" in md
