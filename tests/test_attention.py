"""Last-layer CLS attention maps and their PNG overlays."""

import numpy as np
import torch
from PIL import Image

from genssl_hf.evaluation.attention import cls_attention_maps, save_attention_overlays
from genssl_hf.training.classifier import build_classifier

torch.set_num_threads(1)


def _model():
    torch.manual_seed(0)
    model = build_classifier("tiny", ["a", "b"], multi_label=True, image_size=32, pooling="cls")
    model.set_attn_implementation("sdpa")
    return model.eval()


def test_cls_attention_matches_eager_weights_and_restores_sdpa():
    model = _model()
    x = torch.rand(3, 3, 32, 32)
    grid = cls_attention_maps(model, x, upsample=False)
    assert grid.shape == (3, 4, 4)
    assert model.config._attn_implementation == "sdpa"  # switched back after the eager pass
    model.set_attn_implementation("eager")
    with torch.no_grad():
        att = model.vit(pixel_values=x, output_attentions=True).attentions[-1]
    ref = att[:, :, 0, 1:].mean(1).reshape(3, 4, 4)
    lo, hi = ref.amin((1, 2), keepdim=True), ref.amax((1, 2), keepdim=True)
    torch.testing.assert_close(grid, (ref - lo) / (hi - lo))
    full = cls_attention_maps(model, x)
    assert full.shape == (3, 32, 32) and full.min() >= 0 and full.max() <= 1
    heads = cls_attention_maps(model, x, head_fusion="none")
    assert heads.shape == (3, model.config.num_attention_heads, 32, 32)


def test_overlays_are_written_as_png_with_boxes(tmp_path):
    model = _model()
    images = torch.rand(2, 1, 32, 32)
    maps = cls_attention_maps(model, images.expand(-1, 3, -1, -1))
    paths = save_attention_overlays(
        images, maps, tmp_path / "att", boxes=[[(2, 2, 20, 20)], None], titles=["with box", "without"]
    )
    assert [p.name for p in paths] == ["attention_000.png", "attention_001.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100

    # the box is drawn in lime: the first overlay holds strongly green pixels, the second does not
    def green(p):
        a = np.asarray(Image.open(p).convert("RGB")).astype(int)
        return int(((a[..., 1] > 200) & (a[..., 0] < 100) & (a[..., 2] < 100)).sum())

    assert green(paths[0]) > green(paths[1])
