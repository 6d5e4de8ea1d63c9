"""Issue 22, item 2: the ecosystem's own entry points work on genssl_hf artifacts.

- ``pipeline("image-classification")`` (AdaIN applied by the processor) on a trained folder and
  on its published (plain transformers) form;
- ``AutoModel`` on every encoder folder (ViTMAE and its plain ``ViTModel`` export);
- fine-tuning a published encoder the way transformers' ``run_image_classification.py`` does
  (AutoConfig / AutoImageProcessor / AutoModelForImageClassification + Trainer);
- ``load_dataset(folder, streaming=True)`` of a generated dataset.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import genssl_hf  # noqa: F401  (AutoImageProcessor / Auto classes learn the genssl_hf classes)
from genssl_hf.data import sample_phantom
from genssl_hf.hub import publish as pub
from genssl_hf.processing import AdaINImageProcessor
from genssl_hf.training.classifier import build_classifier
from _publish_artifacts import make_encoder

LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]


def _dim_phantom(seed: int = 3, size: int = 48) -> Image.Image:
    """A phantom rendered darker and flatter than usual: AdaIN changes its pixels a lot."""
    arr = sample_phantom(seed=seed, size=size, findings={"Cardiomegaly": {"size": "big"}}).image.astype(np.float32)
    return Image.fromarray((30 + 0.3 * arr).astype(np.uint8))


@pytest.fixture(scope="module")
def classifier_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    torch.manual_seed(0)
    model = build_classifier("tiny", LABELS, multi_label=True, pooling="mean", image_size=32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    native = root / "native"
    model.save_pretrained(native)
    AdaINImageProcessor(size={"height": 32, "width": 32}, adain_mean=0.5, adain_std=0.25).save_pretrained(native)
    published = root / "published"
    pub.publish("classifier", native, dry_run=published, allow_unchecked=True)
    return {"native": native, "published": published, "model": model}


@pytest.mark.parametrize("which", ["native", "published"])
def test_image_classification_pipeline_applies_adain(classifier_folders, which):
    from transformers import pipeline

    folder = classifier_folders[which]
    classify = pipeline("image-classification", model=str(folder), top_k=None)
    assert type(classify.image_processor).__name__ == "AdaINImageProcessor"
    image = _dim_phantom()
    got = {d["label"]: d["score"] for d in classify(image)}
    assert set(got) == set(LABELS)
    model = classifier_folders["model"]
    proc = AdaINImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        want = torch.sigmoid(model(proc(image, return_tensors="pt")["pixel_values"]).logits)[0]
        without = torch.sigmoid(model(proc(image, do_adain=False, return_tensors="pt")["pixel_values"]).logits)[0]
    np.testing.assert_allclose([got[n] for n in LABELS], want.numpy(), atol=1e-5)  # sigmoid: multi-label
    assert float((want - without).abs().max()) > 1e-3  # so AdaIN did change what the model saw


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    enc = make_encoder(root / "mae")
    published = root / "published"
    pub.publish("encoder", enc, dry_run=published, allow_unchecked=True)
    return {"mae": enc, "published": published, "published_vit": published / "vit"}


@pytest.mark.parametrize("which", ["mae", "published", "published_vit"])
def test_automodel_loads_every_encoder_exactly(encoders, which):
    from transformers import AutoImageProcessor, AutoModel, ViTMAEForPreTraining

    folder = encoders[which]
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    # ViTModel adds a CLS pooler (dense + tanh) that MAE never trained: transformers reports it as
    # MISSING (loudly); every encoder weight is there.
    assert not [k for k in info["missing_keys"] if not k.startswith("pooler.")] and not info["mismatched_keys"]
    assert type(model).__name__ == ("ViTModel" if which == "published_vit" else "ViTMAEModel")
    assert type(AutoImageProcessor.from_pretrained(folder)).__name__ == "AdaINImageProcessor"
    # the encoder computes what the MAE's encoder computes (no masking, token order kept)
    mae = ViTMAEForPreTraining.from_pretrained(encoders["mae"], mask_ratio=0.0).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    n = 16
    with torch.no_grad():
        want = mae.vit(x, noise=torch.arange(n, dtype=torch.float32).expand(2, n)).last_hidden_state
        if which == "published_vit":
            got = model.eval()(x).last_hidden_state
        else:
            model.config.mask_ratio = 0.0
            got = model.eval()(x, noise=torch.arange(n, dtype=torch.float32).expand(2, n)).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_run_image_classification_style_finetuning_of_a_published_encoder(encoders, tmp_path):
    """The transformers example's recipe, step by step, on the published plain-ViT encoder."""
    import datasets
    from sklearn.metrics import accuracy_score
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, Trainer, TrainingArguments

    from genssl_hf.data import phantom_dataset

    # the example's data: an `image` column and a single `label` ClassLabel
    def two_class(n, seed):
        rows = {"image": [], "label": []}
        for i in range(n):
            s = sample_phantom(seed=seed + i, size=32, findings={"Cardiomegaly": {"size": "big"}} if i % 2 else {})
            rows["image"].append(Image.fromarray(s.image))
            rows["label"].append(i % 2)
        feats = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["normal", "cardiomegaly"])}
        )
        return datasets.Dataset.from_dict(rows, features=feats)

    del phantom_dataset
    train, val = two_class(48, 0), two_class(16, 1000)
    labels = train.features["label"].names
    label2id, id2label = {n: i for i, n in enumerate(labels)}, dict(enumerate(labels))
    model_dir = str(encoders["published_vit"])
    config = AutoConfig.from_pretrained(
        model_dir, num_labels=len(labels), label2id=label2id, id2label=id2label, finetuning_task="image-classification"
    )
    image_processor = AutoImageProcessor.from_pretrained(model_dir)
    model, info = AutoModelForImageClassification.from_pretrained(
        model_dir, config=config, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]  # the encoder loads whole

    def transforms(batch):
        batch["pixel_values"] = list(image_processor(batch["image"], return_tensors="pt")["pixel_values"])
        del batch["image"]
        return batch

    def collate_fn(examples):
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["label"] for e in examples]),
        }

    def compute_metrics(p):
        return {"accuracy": accuracy_score(p.label_ids, np.argmax(p.predictions, axis=1))}

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        remove_unused_columns=False,
        learning_rate=2e-3,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        num_train_epochs=3,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train.with_transform(transforms),
        eval_dataset=val.with_transform(transforms),
        data_collator=collate_fn,
        compute_metrics=compute_metrics,
        processing_class=image_processor,
    )
    result = trainer.train()
    metrics = trainer.evaluate()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert np.isfinite(result.training_loss) and 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert np.mean(losses[-3:]) < np.mean(losses[:3])  # it learns
    trainer.save_model(str(tmp_path / "final"))
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "final")
    assert again.config.id2label == id2label


def test_generated_dataset_streams_with_load_dataset(tmp_path):
    import datasets

    from genssl_hf.generation import materialize as mz

    out = tmp_path / "gen"
    res = mz.generate_dataset(
        out, "phantom", prompts="heuristic", num_images=10, height=32, width=32, shard_size=4, progress=False
    )
    assert res is not None
    stream = datasets.load_dataset(str(out), split="train", streaming=True)
    assert isinstance(stream, datasets.IterableDataset)
    rows = list(stream)
    assert len(rows) == 10
    first = rows[0]
    assert first["image"].size == (32, 32) and ("prompt" in first or "prompt_id" in first)
    full = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(r["seed"] for r in rows) == sorted(full["seed"])
