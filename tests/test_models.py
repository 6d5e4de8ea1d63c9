"""genssl_hf.models: presets, backbones, pooled features, method-neutral encoder export (exact reloads)."""

import pytest
import torch

from genssl_hf.models import (
    RESNET_PRESETS,
    VIT_MAE_PRESETS,
    VIT_PRESETS,
    build_backbone,
    build_backbone_config,
    feature_dim,
    load_backbone,
    pooled_features,
    save_encoder,
    verify_encoder_folder,
)

torch.set_num_threads(1)


def test_presets_are_shared_with_the_old_modules():
    from genssl_hf.training import mae_model

    assert mae_model.PRESETS is VIT_MAE_PRESETS
    assert VIT_PRESETS["vit-s16"]["hidden_size"] == 384 and VIT_PRESETS["vit-b16"]["hidden_size"] == 768
    assert (
        RESNET_PRESETS["resnet-18"]["depths"] == [2, 2, 2, 2]
        and RESNET_PRESETS["resnet-50"]["layer_type"] == "bottleneck"
    )


def test_resnet_shapes_match_the_imagenet_models():
    # parameter counts of torchvision's resnet18 / resnet50 bodies without the fc layer: 11.18M / 23.51M
    for name, expected in (("resnet-18", 11_176_512), ("resnet-50", 23_508_032)):
        n = sum(p.numel() for p in build_backbone(name).parameters())
        assert n == expected, (name, n)


@pytest.mark.parametrize("preset,size", [("tiny", 32), ("resnet-tiny", 32)])
def test_pooled_features_shape(preset, size):
    bb = build_backbone(preset, image_size=size)
    x = torch.randn(3, 3, size, size)
    f = pooled_features(bb, x)
    assert f.shape == (3, feature_dim(bb))
    # other input sizes work (ViT interpolates its position embeddings)
    assert pooled_features(bb, torch.randn(2, 3, size * 2, size * 2)).shape == (2, feature_dim(bb))


def test_bad_sizes_fail_early():
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        build_backbone_config("tiny", image_size=36)
    with pytest.raises(ValueError, match="unknown backbone preset"):
        build_backbone_config("resnet-7")
    with pytest.raises(ValueError, match="patch_size does not apply"):
        build_backbone_config("resnet-tiny", patch_size=8)


@pytest.mark.parametrize("preset", ["tiny", "resnet-tiny"])
def test_encoder_export_reloads_exactly(tmp_path, preset):
    from genssl_hf.processing import AdaINImageProcessor
    from transformers import AutoImageProcessor

    bb = build_backbone(preset, image_size=32)
    with torch.no_grad():
        for p in bb.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the init values: the check must compare real weights
    proc = AdaINImageProcessor(size={"height": 32, "width": 32})
    out = save_encoder(bb, proc, tmp_path / "enc", info={"method": "test", "backbone": preset}, card="# card\n")
    checked = verify_encoder_folder(out, reference=bb)
    assert checked["classifier"] in ("ViTForImageClassification", "ResNetForImageClassification")
    assert type(AutoImageProcessor.from_pretrained(out)).__name__ == "AdaINImageProcessor"
    again = load_backbone(out)
    x = torch.randn(2, 3, 32, 32)
    bb.eval()
    again.eval()
    torch.testing.assert_close(pooled_features(again, x), pooled_features(bb, x))
    assert not list(tmp_path.glob("enc/.*tmp*"))


def test_gradcam_maps_for_a_resnet_classifier():
    from genssl_hf.evaluation.attention import saliency_maps
    from genssl_hf.models import build_resnet_classifier

    torch.manual_seed(0)
    clf = build_resnet_classifier("resnet-tiny", ["a", "b"], multi_label=True, image_size=64, head_init_std=0.1)
    x = torch.randn(2, 3, 64, 64)
    maps = saliency_maps(clf, x)  # Grad-CAM for a ResNet
    assert maps.shape == (2, 64, 64)
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert all(float(m.std()) > 0.01 for m in maps)  # never a blank map
    assert all(p.grad is None for p in clf.parameters())  # gradients cleaned up
