"""Dense labels of the phantom world, dense decoders and their scores (segmentation, detection)."""

import hashlib
import json

import numpy as np
import pytest
import torch

from genssl_hf.data.phantom import finding_gallery, iter_phantom_records, phantom_dataset
from genssl_hf.data.phantom_dense import (
    decode_mask,
    encode_mask,
    iter_phantom_dense_records,
    phantom_dense_dataset,
    sample_phantom_dense,
)
from genssl_hf.data.schema import CHEXPERT5

# sha256 of the phantom pixels, labels and findings below, computed with the renderer before it
# recorded finding maps (commit c221cd7): the dense records must not move a pixel.
PHANTOM_HASH_BEFORE_DENSE = "7847aec83bec595afe78f4566e66aa19ce49bccb93012e665e3056982f7fa1ff"


def test_phantom_pixels_unchanged_by_dense_labels():
    h = hashlib.sha256()
    for r in iter_phantom_records(48, 64, seed=3):
        h.update(r["image"].tobytes())
        h.update(json.dumps(r["labels"]).encode())
        h.update(r["findings"].encode())
    for im in finding_gallery(96, seed=1)[0]:
        h.update(im.tobytes())
    assert h.hexdigest() == PHANTOM_HASH_BEFORE_DENSE
    for plain, dense in zip(iter_phantom_records(24, 64, seed=3), iter_phantom_dense_records(24, 64, seed=3)):
        assert np.array_equal(plain["image"], dense["image"])
        assert {k: v for k, v in dense.items() if k not in ("mask", "objects")} == {
            k: v for k, v in plain.items() if k != "image"
        } | {"image": dense["image"]}


def test_dense_labels_follow_the_findings(tmp_path):
    ds = phantom_dense_dataset(16, 64, seed=1, split="validation", cache_dir=str(tmp_path))
    ref = phantom_dataset(16, 64, seed=1, split="validation", cache_dir=str(tmp_path))
    for row, plain in zip(ds, ref):
        assert np.array_equal(np.asarray(row["image"]), np.asarray(plain["image"])) and row["labels"] == plain["labels"]
        masks = decode_mask(row["mask"])
        assert set(np.flatnonzero(masks.any(axis=(1, 2)))) <= set(row["labels"])  # no mask without its label
        assert set(row["objects"]["category"]) <= set(row["labels"])
        for box, c in zip(row["objects"]["bbox"], row["objects"]["category"]):
            x0, y0, x1, y1 = (int(v) for v in box)
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and masks[c, y0:y1, x0:x1].any()
    # big findings are always drawn large enough to be boxed; a bilateral one gets a box per lung
    sample, masks, boxes = sample_phantom_dense(
        5, 64, {"Pleural Effusion": {"size": "big", "side": "bilateral"}, "Cardiomegaly": {"size": "big"}}
    )
    cats = [c for _, c in boxes]
    assert cats.count(CHEXPERT5.index("Pleural Effusion")) == 2 and cats.count(CHEXPERT5.index("Cardiomegaly")) == 1
    assert np.array_equal(decode_mask(encode_mask(masks)), masks)
    assert masks[CHEXPERT5.index("Pleural Effusion"), 40:].sum() > masks[CHEXPERT5.index("Pleural Effusion"), :24].sum()


def test_coco_map_matches_hand_reference():
    pytest.importorskip("pycocotools")
    from genssl_hf.evaluation.dense_metrics import MEDSYN_IOU_THRESHOLDS, coco_map

    # Two ground-truth boxes; one exact detection (IoU 1) and one with IoU 0.68 at a lower score.
    truth = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 0])}]
    pred = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 26.8]]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 0]),
        }
    ]
    # By hand: at IoU thresholds <= 0.65 both match (AP 1); at 0.70 and 0.75 only the first does, so
    # precision is 1 up to recall 0.5 and COCO's 101-point interpolation gives 51 / 101.
    expected = (6 * 1.0 + 2 * 51 / 101) / 8
    assert MEDSYN_IOU_THRESHOLDS == (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
    assert coco_map(pred, truth, num_classes=2)["map"] == pytest.approx(expected, abs=1e-9)
    # a detection of the wrong class, or none at all, scores zero
    wrong = [{**pred[0], "labels": torch.tensor([1, 1])}]
    assert coco_map(wrong, truth, num_classes=2)["map"] == 0.0


@pytest.mark.parametrize("preset", ["tiny", "resnet-tiny"])
def test_dense_decoders_give_full_and_strided_maps(preset):
    from genssl_hf.models import build_backbone
    from genssl_hf.models.dense_heads import backbone_feature_maps, build_dense_decoder

    backbone = build_backbone(preset).eval()
    maps = backbone_feature_maps(backbone, torch.randn(2, 3, 64, 64))
    seg = build_dense_decoder(backbone, 64, 5, out_stride=2, upsample_to_input=True)
    det = build_dense_decoder(backbone, 64, 9, out_stride=4)
    assert seg(maps).shape == (2, 5, 64, 64) and det(maps).shape == (2, 9, 16, 16)
    assert not any(p.requires_grad for p in backbone_feature_maps(backbone, torch.randn(1, 3, 64, 64)))


def _phantom_splits(tmp_path):
    train = phantom_dense_dataset(300, 64, seed=0, split="train", cache_dir=str(tmp_path))
    test = phantom_dense_dataset(80, 64, seed=0, split="test", cache_dir=str(tmp_path))
    return train, test


@pytest.mark.slow
def test_segmentation_beats_the_mean_mask(tmp_path):
    from genssl_hf.evaluation.dense import evaluate_dense
    from genssl_hf.training.dense_fit import DenseFitConfig

    train, test = _phantom_splits(tmp_path)
    res = evaluate_dense(
        "segmentation", "resnet-tiny", train, test, fractions=[1.0], config=DenseFitConfig(max_steps=400)
    )
    row = res["rows"][0]
    assert row["scores"]["dice"] > row["baseline"]["dice"] + 0.15, row
    assert 0.0 <= row["scores"]["iou_present"] <= row["scores"]["dice_present"] <= 1.0


@pytest.mark.slow
def test_detection_beats_fixed_boxes(tmp_path):
    pytest.importorskip("pycocotools")
    from genssl_hf.evaluation.dense import evaluate_dense
    from genssl_hf.training.dense_fit import DenseFitConfig

    train, test = _phantom_splits(tmp_path)
    res = evaluate_dense("detection", "resnet-tiny", train, test, fractions=[1.0], config=DenseFitConfig(max_steps=400))
    row = res["rows"][0]
    assert row["scores"]["map"] > row["baseline"]["map"] + 0.08, row


def test_dense_cli_rejects_bad_input_before_compute(tmp_path):
    from genssl_hf.evaluation.dense_cli import main

    with pytest.raises(ValueError, match="--fractions"):
        main(["--model", "a=resnet-tiny", "--fractions", "2", "--output_dir", str(tmp_path)], "segmentation")
    with pytest.raises(ValueError, match="not-a-preset"):
        main(["--model", "a=not-a-preset", "--output_dir", str(tmp_path)], "detection")
    with pytest.raises(SystemExit):
        main(["--model", "a=tiny", "--output_dir", str(tmp_path)])  # --task required without a subcommand
