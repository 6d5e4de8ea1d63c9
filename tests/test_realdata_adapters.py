"""The adapters on the real data beside the project (skipped when ../shared/data is absent)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from genssl_hf.data import NIH14, load_iu_reports, load_kermany, load_nih_subset, read_cxr, stratified_split
from genssl_hf.data.reports import iter_iu_reports


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hf-cache")


def test_kermany_counts_images_and_patient_split(shared_data, cache):
    ds = load_kermany(shared_data / "kermany-pneumonia-224", cache_dir=cache)
    names = ds.features["label"].names
    assert names == ["NORMAL", "PNEUMONIA"]
    counts = Counter(names[i] for i in ds["label"])
    assert counts == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert Counter(ds["subtype"]) == {"normal": 1341, "bacterial": 2530, "viral": 1345}
    assert all(ds["patient_id"])
    for i in (0, len(ds) - 1):
        img = ds[i]["image"]
        assert img.mode == "L" and img.size == (224, 224)
    # the stored RGB-with-equal-channels JPEG reads as the same gray values through read_cxr
    ref = read_cxr(shared_data / "kermany-pneumonia-224" / ds[0]["path"])
    assert ref.shape == (224, 224) and 0 <= ref.min() < ref.max() <= 1
    assert np.abs(np.asarray(ds[0]["image"], np.float32) / 255 - ref).max() <= 1 / 255 + 1e-6
    split = stratified_split(ds, 0.1, seed=0, group_by="patient_id")
    assert not set(split["train"]["patient_id"]) & set(split["validation"]["patient_id"])
    share = np.mean(split["validation"]["label"])
    assert abs(share - 3875 / 5216) < 0.03 and 0.08 < len(split["validation"]) / len(ds) < 0.12


def test_nih_subset_splits_labels_images(shared_data, cache):
    dd = load_nih_subset(shared_data / "nih-cxr14-1000-64px", split=None, cache_dir=cache)
    assert {k: len(v) for k, v in dd.items()} == {"train": 600, "valid": 200, "test": 200}
    disagree = []
    for ds in dd.values():
        assert ds.features["labels"].feature.names == list(NIH14)
        assert Counter(ds["binary"]) == {"0_normal": len(ds) // 2, "1_abnormal": len(ds) // 2}
        # "No Finding" <-> empty labels; the folder flag agrees with the official labels except
        # for one image of the subset (filed as 0_normal, labelled Pneumonia in Data_Entry_2017)
        disagree += [
            (p, labs) for p, b, labs in zip(ds["path"], ds["binary"], ds["labels"]) if (b == "0_normal") != (not labs)
        ]
        assert set(ds["view"]) <= {"PA", "AP"}
        img = ds[0]["image"]
        assert img.mode == "L" and img.size == (64, 64)
    assert disagree == [("valid/0_normal/00000193_019.png", [NIH14.index("Pneumonia")])]


def test_iu_reports_corpus(shared_data, cache):
    tgz = shared_data / "iu-xray-reports" / "NLMCXR_reports.tgz"
    ds = load_iu_reports(tgz, cache_dir=cache)
    assert len(ds) == 3955
    assert len(set(ds["report_id"])) == 3955
    texts = ds["text"]
    assert sum(1 for t in texts if t) > 3900
    assert sum(1 for m in ds["mesh_major"] if m) > 3900
    assert sum("effusion" in t.lower() for t in texts) > 500
    first = next(iter_iu_reports(tgz))
    assert first["report_id"] == ds[0]["report_id"]
