"""Frozen-feature quality (evaluation.frozen_features): the kNN scorer against a numpy reference, the
linear probe's C chosen on validation only, the encoder seen without masking, the label-fraction
subsets equal to fine-tuning's, bad inputs, and — the check that something learns — a briefly
trained encoder's frozen features beat the random-init features it started from on phantoms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genssl_hf.evaluation import frozen_features as ff
from genssl_hf.evaluation import frozen_features_cli as ffc
from genssl_hf.evaluation import probe_scores as ps

torch.set_num_threads(1)  # shared CI machine

SIZE = 64
SIZES = {"train": 320, "validation": 120, "test": 160}


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    """A saved labelled phantom DatasetDict (multi-label, five findings), as a registry spec."""
    from genssl_hf.data.phantom import phantom_splits

    root = tmp_path_factory.mktemp("frozen_phantoms") / "dataset"
    phantom_splits(SIZES, size=SIZE, seed=5).save_to_disk(str(root))
    return root


@pytest.fixture(scope="module")
def phantoms(phantom_folder):
    from genssl_hf.data.registry import open_labelled_dataset

    return open_labelled_dataset(str(phantom_folder))


# ------------------------------------------------------------------------------------------ kNN
def _knn_reference(train_x, train_y, test_x, k, temperature):
    """Plain numpy weighted kNN: cosine similarity, k nearest, votes weighted by exp(sim / T)."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    out = np.zeros((len(b), train_y.shape[1]))
    for i, row in enumerate(b):
        sim = a @ row
        nearest = np.argsort(-sim)[:k]
        w = np.exp(sim[nearest] / temperature)
        out[i] = (w[:, None] * train_y[nearest]).sum(0) / w.sum()
    return out


@pytest.mark.parametrize("multi_label", [False, True])
def test_knn_matches_numpy_reference(multi_label):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(200, 16)).astype(np.float32)
    test_x = rng.normal(size=(50, 16)).astype(np.float32)
    if multi_label:
        train_y = (rng.random((200, 3)) < 0.4).astype(np.float32)
        test_y = (rng.random((50, 3)) < 0.4).astype(np.int64)
        onehot = train_y
    else:
        train_y = rng.integers(0, 3, 200)
        test_y = rng.integers(0, 3, 50)
        onehot = np.eye(3)[train_y]
    scores = ps.knn_class_scores(train_x, train_y, test_x, 3, k=20, temperature=0.07)
    ref = _knn_reference(train_x.astype(np.float64), onehot, test_x.astype(np.float64), 20, 0.07)
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-5)
    # AUC: one-vs-rest mean over the classes, as fine-tuning reports it
    t = test_y if multi_label else np.eye(3)[test_y]
    expected = np.mean([roc_auc_score(t[:, c], ref[:, c]) for c in range(3)])
    assert ps.knn_auc(train_x, train_y, test_x, test_y, 3) == pytest.approx(expected, abs=1e-6)


def test_binary_auc_is_the_positive_class_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 80)
    p1 = np.clip(0.3 * y + rng.random(80) * 0.7, 0, 1)
    assert ps.mean_auc(y, np.stack([1 - p1, p1], 1)) == pytest.approx(roc_auc_score(y, p1))


# ------------------------------------------------------------------------------------------ probe
def _probe_data(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=10)

    def draw(n):
        x = rng.normal(size=(n, 10))
        return x, (x @ w + rng.normal(scale=2.0, size=n) > 0).astype(np.int64)

    return draw(60), draw(200), draw(200)


def test_linear_probe_chooses_C_on_validation_only():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    (tx, ty), (vx, vy), (sx, sy) = _probe_data()
    grid = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    probe = ps.linear_probe_scores(tx, ty, vx, vy, sx, 2, c_grid=grid)
    # the chosen C is the validation argmax, recomputed here independently
    sc = StandardScaler().fit(tx)
    val = {
        c: roc_auc_score(
            vy, LogisticRegression(C=c, max_iter=5000).fit(sc.transform(tx), ty).predict_proba(sc.transform(vx))[:, 1]
        )
        for c in grid
    }
    assert probe["validation_auc"] == pytest.approx(val, abs=1e-6)
    assert probe["C"] == max(grid, key=lambda c: (val[c], -c))
    # the test rows (and labels) play no part in the choice: other test rows, the same C
    other = ps.linear_probe_scores(tx, ty, vx, vy, np.random.default_rng(9).normal(size=(7, 10)), 2, c_grid=grid)
    assert other["C"] == probe["C"] and other["validation_auc"] == probe["validation_auc"]
    auc, c = ps.linear_probe_auc(tx, ty, vx, vy, sx, sy, 2, c_grid=grid)
    assert c == probe["C"] and auc > 0.75
    # shuffled test labels change the test AUC but not the chosen C
    auc_shuffled, c_shuffled = ps.linear_probe_auc(
        tx, ty, vx, vy, sx, np.random.default_rng(3).permutation(sy), 2, c_grid=grid
    )
    assert c_shuffled == c and abs(auc_shuffled - 0.5) < abs(auc - 0.5)


def test_linear_probe_multi_label_constant_class_scores_its_rate():
    (tx, ty), (vx, vy), (sx, sy) = _probe_data(2)
    y = np.stack([ty, np.zeros_like(ty)], 1)  # the second finding never occurs in the training rows
    probe = ps.linear_probe_scores(tx, y, vx, np.stack([vy, vy], 1), sx, 2, c_grid=(0.1, 1.0))
    assert np.all(probe["test_scores"][:, 1] == 0.0)
    assert ps.mean_auc(np.stack([sy, 1 - sy], 1), probe["test_scores"]) < 1.0


# ------------------------------------------------------------------------------------------ encoder
def _tiny_mae_folder(path, with_adain: bool):
    from genssl_hf.processing import AdaINImageProcessor
    from genssl_hf.training import mae_model

    torch.manual_seed(0)
    model, _ = mae_model.build_model(mae_model.build_mae_config("tiny", image_size=SIZE, patch_size=8))
    model.save_pretrained(path)
    if with_adain:
        AdaINImageProcessor(
            size={"height": SIZE, "width": SIZE},
            do_adain=True,
            adain_mean=0.45,
            adain_std=0.2,
            image_mean=[0.5],
            image_std=[0.5],
        ).save_pretrained(path)
    return path


def test_mae_folder_is_seen_without_masking(tmp_path, phantoms):
    """Mean-pooled features of an MAE folder equal the ViTMAE encoder's own output with every patch
    kept (mask ratio 0: the patches are only shuffled, which mean pooling ignores)."""
    from transformers import ViTMAEModel

    folder = _tiny_mae_folder(tmp_path / "mae", with_adain=False)
    rows = phantoms["test"].select(range(12))
    feats = ff.extract_features(folder, rows, batch_size=5)
    cls = ff.extract_features(folder, rows, pooling="cls")
    reference = ViTMAEModel.from_pretrained(folder, mask_ratio=0.0).eval()
    pixels = ff.Collator(SIZE, False, 1).pixels([{"image": im} for im in rows["image"]])
    x = ((pixels.float() / 255 - 0.5) / 0.5).expand(-1, 3, -1, -1)  # no processor in the folder: mean / std 0.5
    with torch.no_grad():
        hidden = reference(pixel_values=x).last_hidden_state
    assert feats.shape == (12, 128)
    np.testing.assert_allclose(feats, hidden[:, 1:].mean(1).numpy(), atol=1e-4)
    np.testing.assert_allclose(cls, hidden[:, 0].numpy(), atol=1e-4)
    # an intermediate block: ViTMAE's hidden state of that block (mean over the shuffled patches)
    with torch.no_grad():
        block2 = reference(pixel_values=x, output_hidden_states=True).hidden_states[2]
    np.testing.assert_allclose(
        ff.extract_features(ff.load_frozen_encoder(folder, layer=2), rows), block2[:, 1:].mean(1).numpy(), atol=1e-4
    )
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        ff.load_frozen_encoder(folder, layer=7)
    enc = ff.load_frozen_encoder(folder)
    assert not enc.backbone.training and not any(p.requires_grad for p in enc.backbone.parameters())


def test_normalisation_follows_the_processor_choice(tmp_path):
    folder = _tiny_mae_folder(tmp_path / "mae", with_adain=True)
    enc = ff.load_frozen_encoder(folder)
    assert enc.normalizer.do_adain and enc.normalizer.adain_mean == pytest.approx(0.45)
    assert not ff.load_frozen_encoder(folder, image_processor="none").normalizer.do_adain
    random_adain = ff.load_frozen_encoder("tiny", image_processor=str(folder))
    assert random_adain.normalizer.do_adain and random_adain.normalizer_source.startswith(str(folder))
    # a preset's random weights are seeded
    a = ff.load_frozen_encoder("tiny", seed=3).backbone.state_dict()
    b = ff.load_frozen_encoder("tiny", seed=3).backbone.state_dict()
    c = ff.load_frozen_encoder("tiny", seed=4).backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------------------------------ subsets
def test_fraction_subsets_are_finetunings(phantom_folder, phantoms, monkeypatch):
    """The table's training rows for (fraction, seed) are the rows fine-tuning picks for
    ``--label_fraction fraction --seed seed`` (same indices hash as its label_fraction.json)."""
    from genssl_hf.training import finetune
    from genssl_hf.utils import sha256_strings

    features = {n: np.random.default_rng(0).normal(size=(len(ds), 8)).astype(np.float32) for n, ds in phantoms.items()}
    sizes = {len(ds): n for n, ds in phantoms.items()}
    monkeypatch.setattr(ff, "extract_features", lambda enc, ds, **kw: features[sizes[len(ds)]])
    table = ff.frozen_feature_table({"random": "tiny"}, phantoms, fractions=(0.05, 0.25), seeds=(0, 2))
    for row in table["rows"]:
        args = finetune.build_parser().parse_args(
            [
                "--model",
                "tiny",
                "--dataset",
                str(phantom_folder),
                "--output_dir",
                "unused",
                "--label_fraction",
                str(row["fraction"]),
                "--seed",
                str(row["seed"]),
            ]
        )
        data = finetune._labelled_training_data(args)
        assert row["train_indices_sha256"] == sha256_strings(str(i) for i in data["fraction_idx"].tolist())
        assert row["num_train"] == len(data["fraction_idx"])


# ------------------------------------------------------------------------------------------ learns
def _train_briefly(folder, phantoms, steps=250):
    """``resnet-tiny`` trained supervised on the phantom findings for 250 steps, saved as a folder.
    (A tiny ViT from scratch does not learn the findings from 320 images in a CI-sized budget:
    measured 0.53-0.56 test mAUC after 100-200 AdamW steps at lr 1e-3 / 3e-4; the ResNet reaches
    0.81 after 100. The ViT / ViTMAE loading path is checked exactly above.)"""
    from genssl_hf.training.classifier import build_classifier
    from genssl_hf.training.finetune_data import InputNormalizer, targets_of

    ds = phantoms["train"]
    y, names, _ = targets_of(ds)
    torch.manual_seed(0)
    model = build_classifier("resnet-tiny", names, multi_label=True, image_size=SIZE)
    pixels = ff.Collator(SIZE, False, 1).pixels([{"image": im} for im in ds["image"]])
    x_all = InputNormalizer(image_size=SIZE)(pixels.float() / 255)
    y_all = torch.from_numpy(y).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (32,), generator=g)
        loss = model(pixel_values=x_all[idx], labels=y_all[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_trained_encoder_beats_random_features(tmp_path, phantoms):
    trained = _train_briefly(tmp_path / "trained", phantoms)
    table = ff.frozen_feature_table(
        {"random": "resnet-tiny", "trained": str(trained)},
        phantoms,
        fractions=(0.25, 1.0),
        seeds=(0, 1),
        c_grid=(0.01, 0.1, 1.0, 10.0),
    )
    summary = {(r["encoder"], r["fraction"]): r for r in ffc.summarise_table(table)}
    for f in (0.25, 1.0):
        rnd, trn = summary[("random", f)], summary[("trained", f)]
        print(
            f"fraction {f}: kNN {trn['knn_auc_mean']:.3f} vs random {rnd['knn_auc_mean']:.3f}; "
            f"probe {trn['probe_auc_mean']:.3f} vs random {rnd['probe_auc_mean']:.3f}"
        )
        # measured: probe 0.944 / 0.941 vs 0.783 / 0.856, kNN 0.914 / 0.923 vs 0.624 / 0.730
        assert trn["probe_auc_mean"] > rnd["probe_auc_mean"] + 0.05
        assert trn["knn_auc_mean"] > rnd["knn_auc_mean"] + 0.05
    md = ffc.markdown_table(table)
    assert "| trained |" in md and "kNN 25%" in md


# ------------------------------------------------------------------------------------------ CLI
def test_command_line_writes_json_and_markdown(tmp_path, phantom_folder):
    out = tmp_path / "out"
    table = ffc.main(
        [
            "--model",
            "random=tiny",
            "--dataset",
            str(phantom_folder),
            "--output_dir",
            str(out),
            "--fractions",
            "0.5",
            "1",
            "--seeds",
            "0",
            "--c_grid",
            "0.1",
            "1",
            "--num_threads",
            "1",
        ]
    )
    saved = json.loads((out / "frozen_features.json").read_text())
    assert len(saved["rows"]) == 2 and saved["rows"][0]["encoder"] == "random"
    assert saved["summary"][0]["probe_auc_mean"] == pytest.approx(table["summary"][0]["probe_auc_mean"])
    assert "| random |" in (out / "frozen_features.md").read_text()
    # the t-SNE map of the test features is written beside the tables (no temp files)
    assert sorted(p.name for p in out.iterdir()) == [
        "frozen_features.json",
        "frozen_features.md",
        "tsne_random_seed0.png",
    ]
    assert saved["feature_maps"] == [str(out / "tsne_random_seed0.png")]
    with pytest.raises(FileExistsError, match="--overwrite"):
        ffc.main(["--model", "random=tiny", "--dataset", str(phantom_folder), "--output_dir", str(out)])


def test_bad_inputs_fail_before_compute(tmp_path, phantom_folder, monkeypatch):
    def no_compute(*a, **k):
        raise AssertionError("features were computed before the input check")

    monkeypatch.setattr(ff, "extract_features", no_compute)
    base = ["--dataset", str(phantom_folder), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="no/such/encoder"):
        ffc.main(base + ["--model", "a=tiny", "--model", "b=no/such/encoder"])
    with pytest.raises(FileNotFoundError, match="missing_processor"):
        ffc.main(base + ["--model", f"a=tiny:{tmp_path / 'missing_processor'}"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "vit", "image_size": 64, "patch_size": 8}))
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken"):
        ffc.main(base + ["--model", f"a={broken}"])
    with pytest.raises(ValueError, match="TITLE=PATH_OR_PRESET"):
        ffc.main(base + ["--model", "tiny"])
    with pytest.raises(ValueError, match="given twice"):
        ffc.main(base + ["--model", "a=tiny", "--model", "a=tiny"])
    for bad in ("0", "1.5", "-0.1", "nan"):
        with pytest.raises(SystemExit):
            ffc.main(base + ["--model", "a=tiny", "--fractions", bad])
    with pytest.raises(SystemExit):  # no --model at all
        ffc.main(base)
    with pytest.raises(ValueError, match="no encoders"):
        ff.frozen_feature_table({}, None)
    with pytest.raises(ValueError, match=r"label fraction 2"):
        ff.frozen_feature_table({"a": "tiny"}, None, fractions=(2,))
    assert not (tmp_path / "o").exists()


def test_tsne_map_keeps_separated_classes_apart(tmp_path):
    """Three well-separated Gaussian classes in 20-d stay separated on the 2-d map (the 5 nearest map
    neighbours of almost every point share its class; chance is 1/3), and the categories of
    multi-label targets are no finding / the single finding / 2+ findings."""
    from sklearn.neighbors import KNeighborsClassifier

    from genssl_hf.evaluation.feature_map import label_categories, tsne_embedding, tsne_figure

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(120, 20)) + 8.0 * np.eye(3, 20)[y]
    xy = tsne_embedding(x, seed=0)
    purity = KNeighborsClassifier(5).fit(xy, y).score(xy, y)
    assert purity > 0.9, purity
    codes, names = label_categories(np.array([[0, 0], [1, 0], [0, 1], [1, 1]]), ["A", "B"], True)
    assert codes.tolist() == [0, 1, 2, 3] and names == ["no finding", "A", "B", "2+ findings"]
    png = tsne_figure(x, y, ["a", "b", "c"], False, tmp_path / "m.png", title="three blobs")
    assert png.stat().st_size > 1000 and [p.name for p in tmp_path.iterdir()] == ["m.png"]
