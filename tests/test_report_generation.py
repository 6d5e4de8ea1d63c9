"""Report generation: the VisionEncoderDecoderModel builder, exact reloads, the image-to-text
pipeline, training (1 and 2 processes), the phantom comparison against both baselines, publishing."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny ViT encoder folder (64 px, patch 8, hidden 64, 2 layers), as an encoder export would be."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enc") / "vit"
    cfg = ViTConfig(
        image_size=64,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        layer_norm_eps=1e-6,
    )
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    return path


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_encoders_load_exactly(tmp_path, encoder_dir):
    from transformers import ViTModel

    from genssl_hf.training.mae_model import build_mae_config, build_model
    from genssl_hf.training.report_generator_model import load_vit_encoder

    enc, rec = load_vit_encoder(encoder_dir)
    src = ViTModel.from_pretrained(encoder_dir, add_pooling_layer=False)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(enc.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert rec["encoder"] == "pretrained" and rec["init_from"] == str(encoder_dir)
    # a GEN-SSL MAE folder: its encoder, every weight (fixed sin-cos position table included)
    mae, _ = build_model(build_mae_config("tiny", image_size=32, patch_size=8))
    mae.save_pretrained(tmp_path / "mae")
    enc, rec = load_vit_encoder(tmp_path / "mae")
    for k, v in mae.vit.state_dict().items():
        if k in enc.state_dict():
            torch.testing.assert_close(enc.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert rec["source_model_type"] == "vit_mae" and rec["method"] == "mae"
    with pytest.raises(ValueError, match="CNN encoder"):
        load_vit_encoder("resnet-tiny")
    with pytest.raises(FileNotFoundError, match="neither a ViT preset"):
        load_vit_encoder(tmp_path / "nope")
    with pytest.raises(ValueError, match="trained at 64 px"):
        load_vit_encoder(encoder_dir, image_size=32)


def test_decoders_and_errors():
    from genssl_hf.training.report_generator_model import build_decoder, minilm_path

    dec, tok, rec = build_decoder("minilm", 1)
    assert rec["num_layers"] == 1 and dec.config.add_cross_attention and dec.config.is_decoder
    from safetensors.torch import load_file

    mini = load_file(str(minilm_path() / "model.safetensors"))
    emb = next(v for k, v in mini.items() if k.endswith("word_embeddings.weight"))
    torch.testing.assert_close(dec.bert.embeddings.word_embeddings.weight, emb)  # MiniLM weights, not random
    gpt, _, grec = build_decoder("gpt2", 2, tokenizer=tok, gpt2_hidden=64, gpt2_heads=2)
    assert grec["decoder"] == "gpt2" and gpt.config.add_cross_attention and gpt.config.vocab_size == len(tok)
    with pytest.raises(ValueError, match="decoder_layers"):
        build_decoder("minilm", 7)
    with pytest.raises(ValueError, match="unknown decoder"):
        build_decoder("t5")


def test_folder_reloads_exactly_and_runs_as_pipeline(tmp_path, encoder_dir):
    import genssl_hf  # noqa: F401
    from transformers import AutoProcessor, VisionEncoderDecoderModel, pipeline

    from genssl_hf.processing import ReportGeneratorProcessor
    from genssl_hf.training.report_generator_model import (
        build_report_generator,
        generate_reports,
        save_report_generator,
    )

    model, proc, rec = build_report_generator(
        str(encoder_dir),
        "minilm",
        decoder_layers=1,
        generation={"num_beams": 2, "no_repeat_ngram_size": 2, "max_new_tokens": 6},
    )
    out = tmp_path / "rg"
    out.mkdir()
    save_report_generator(model, proc, out)
    re_model, info = VisionEncoderDecoderModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    a, b = _state(model), _state(re_model)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["num_beams"] == 2 and gen["no_repeat_ngram_size"] == 2 and gen["max_new_tokens"] == 6
    re_proc = AutoProcessor.from_pretrained(out)
    assert isinstance(re_proc, ReportGeneratorProcessor)
    assert type(re_proc.image_processor).__name__ == "AdaINImageProcessor"
    img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    # greedy and beam search both run; the targets end with the end token
    for beams in (1, 3):
        texts = generate_reports(re_model, re_proc, [img, img], num_beams=beams, max_new_tokens=5)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    labels = re_proc.encode_reports(["No edema.", "Big cardiomegaly. No edema."])
    n = len(re_proc.tokenizer("No edema.", add_special_tokens=False)["input_ids"])
    assert labels[0, n] == re_proc.special_ids["eos_token_id"] and (labels[0, n + 1 :] == -100).all()
    assert re_proc.special_ids["decoder_start_token_id"] not in labels[1].tolist()  # the model prepends it
    # transformers 5: "image-to-text" is served by image-text-to-text; the text is a decoder prompt
    # (transformers 5.24's own notice about the renamed task has a logging-format bug that pytest's log
    # capture turns into an error: keep its logger quiet for the call)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        pipe = pipeline("image-to-text", model=str(out))
    finally:
        hf_logging.set_verbosity(verbosity)
    from PIL import Image

    res = pipe(images=Image.fromarray(img), text="", max_new_tokens=4)
    direct = generate_reports(re_model, re_proc, [img], max_new_tokens=4)
    assert res[0]["generated_text"].strip() == direct[0]
    with pytest.raises(ValueError, match="needs images"):
        re_proc()


def _train_args(out, encoder_dir, *extra):
    from genssl_hf.training.report_generator_args import build_parser

    return build_parser().parse_args(
        [
            "--model",
            str(encoder_dir),
            "--decoder_layers",
            "1",
            "--output_dir",
            str(out),
            "--logging_steps",
            "5",
            "--max_new_tokens",
            "40",
            *extra,
        ]
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~200 CPU-s: 845 s of wall at load 7-8, ~1,700 s at load 9 (make test: 900 s)
def test_phantom_clinical_f1_far_above_baselines(tmp_path, encoder_dir):
    """Trained on 1,500 phantom pairs, the generator states the findings of unseen phantoms far better
    than the most common report and than the nearest training image's report. The recipe: a small
    GPT-2 decoder from scratch on a word vocabulary of the training reports (see BENCHMARKS.md: with
    MiniLM's 30,522-piece vocabulary the same budget leaves one report for every image)."""
    from genssl_hf.data.schema import CHEXPERT5
    from genssl_hf.evaluation.report_generation import evaluate_report_generator
    from genssl_hf.training.report_generator import load_report_pairs, train_report_generator

    out = tmp_path / "rg"
    pairs = load_report_pairs("phantom:1500", image_size=64)
    summary = train_report_generator(
        _train_args(
            out,
            encoder_dir,
            "--decoder",
            "gpt2",
            "--decoder_layers",
            "2",
            "--gpt2_hidden",
            "128",
            "--vocabulary",
            "reports",
            "--max_steps",
            "1500",
            "--per_device_train_batch_size",
            "32",
            "--learning_rate",
            "2e-3",
            "--encoder_learning_rate",
            "2e-3",
        ),
        dataset=pairs,
    )
    assert np.isfinite(summary["final_loss"]) and summary["validation_loss"] < 0.5
    pairs["test"] = pairs["test"].select(range(160))
    res = evaluate_report_generator(
        out, pairs, observations=CHEXPERT5, output_dir=tmp_path / "eval", examples_allowed=True
    )
    s = res["systems"]
    print({k: round(v["ce_f1"], 3) for k, v in s.items()}, res["distinct_outputs"])
    model_f1 = max(s["greedy"]["ce_f1"], s["beam"]["ce_f1"])
    assert s["constant"]["ce_f1"] < 0.2  # the most common phantom report is the normal film
    assert model_f1 > s["constant"]["ce_f1"] + 0.4
    # retrieval under the encoder the generator started from (the compared encoder, before report
    # supervision) and under the generator's own fine-tuned encoder (a strong retrieval system)
    assert model_f1 > s["nearest_neighbour_initial"]["ce_f1"] + 0.15
    assert model_f1 > s["nearest_neighbour"]["ce_f1"] + 0.03
    assert (tmp_path / "eval" / "report_tables.md").is_file()
    assert res["distinct_outputs"]["greedy"] >= 10  # it reads the image: not one report for every film


@pytest.mark.slow
def test_two_process_training(tmp_path, encoder_dir, two_cpu_processes):
    out = tmp_path / "ddp"
    script = ROOT / "scripts" / "train_report_generator.py"
    args = ["--model", encoder_dir, "--decoder_layers", "1", "--dataset", "phantom:64"]
    args += [
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "3",
        "--checkpointing_steps",
        "2",
        "--output_dir",
        out,
    ]
    res = two_cpu_processes([script, *args])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["environment"]["num_processes"] == 2 and cfg["derived"]["total_batch_size"] == 8
    assert (out / "checkpoint-2" / "train_state.json").is_file() and (out / "model.safetensors").is_file()
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 3


def test_bad_input_is_refused_before_training(tmp_path, encoder_dir):
    from genssl_hf.training.report_generator import load_report_pairs, train_report_generator

    with pytest.raises(ValueError, match="num_beams"):
        train_report_generator(_train_args(tmp_path / "a", encoder_dir, "--num_beams", "0"))
    with pytest.raises(ValueError, match="unknown pairs spec"):
        load_report_pairs("nih:/nowhere")
    with pytest.raises(ValueError, match="at least 8"):
        load_report_pairs("phantom:4")
    with pytest.raises(ValueError, match="needs --decoder gpt2"):
        train_report_generator(_train_args(tmp_path / "b", encoder_dir, "--vocabulary", "reports"))


def test_report_vocabulary_tokenizer(tmp_path, encoder_dir):
    """R2Gen-style word vocabulary of the training reports: words seen >= min_frequency times,
    punctuation as tokens, hyphenated words whole; saved with the folder and reloaded exactly."""
    from transformers import AutoTokenizer

    from genssl_hf.processing.report_vocab import build_report_vocabulary_tokenizer
    from genssl_hf.training.report_generator_model import (
        build_report_generator,
        generate_reports,
        save_report_generator,
    )

    reports = ["Big right-sided edema. No cardiomegaly."] * 3 + ["Small rare finding."]
    tok = build_report_vocabulary_tokenizer(reports, min_frequency=3)
    words = set(tok.get_vocab())
    assert {"big", "right-sided", "edema", ".", "no", "cardiomegaly"} <= words and "rare" not in words
    ids = tok("No right-sided edema.", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "no right-sided edema."
    assert tok.unk_token_id in tok("rare edema.", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="min_frequency"):
        build_report_vocabulary_tokenizer(reports, 0)
    with pytest.raises(ValueError, match="non-empty list"):
        build_report_vocabulary_tokenizer([])
    model, proc, rec = build_report_generator(
        str(encoder_dir),
        "gpt2",
        decoder_layers=1,
        gpt2_hidden=64,
        tokenizer=tok,
        generation={"num_beams": 1, "max_new_tokens": 4},
    )
    assert model.config.decoder.vocab_size == len(tok) and rec["tokenizer"] == f"report words ({len(tok)})"
    out = tmp_path / "rg"
    out.mkdir()
    save_report_generator(model, proc, out)
    again = AutoTokenizer.from_pretrained(out)
    assert again.get_vocab() == tok.get_vocab() and again.decode(ids) == "no right-sided edema."
    img = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
    assert isinstance(generate_reports(model, proc, [img], max_new_tokens=4)[0], str)
    with pytest.raises(ValueError, match="MiniLM's own WordPiece"):
        build_report_generator(str(encoder_dir), "minilm", decoder_layers=1, tokenizer=tok)


def test_patient_split_keeps_patients_apart():
    import datasets

    from genssl_hf.data.pairs import ImageReportPairs
    from genssl_hf.training.report_generator import split_by_patient

    n = 60
    images = datasets.Dataset.from_dict(
        {"image": [np.zeros((4, 4), np.uint8)] * n, "patient_id": [f"p{i // 3}" for i in range(n)]}
    )
    pairs = ImageReportPairs(images, [f"report {i}" for i in range(n)], "findings")
    parts = split_by_patient(pairs, {"validation": 0.1, "test": 0.2}, seed=0)
    seen = {k: set(v.images["patient_id"]) for k, v in parts.items()}
    assert sum(len(v) for v in parts.values()) == n
    assert (
        not (seen["train"] & seen["test"])
        and not (seen["train"] & seen["validation"])
        and not (seen["validation"] & seen["test"])
    )
    assert len(seen["test"]) == 4 and len(seen["validation"]) == 2


def _iu_archive(path: Path, texts, images_per_report: int = 0):
    with tarfile.open(path, "w:gz") as tar:
        for i, text in enumerate(texts):
            imgs = "".join(f'<parentImage id="CXR{i}_IM-{v}"/>' for v in range(images_per_report))
            xml = (
                f'<eCitation><uId id="CXR{i}"/><MedlineCitation><Article><Abstract>'
                f'<AbstractText Label="FINDINGS">{text}</AbstractText></Abstract></Article></MedlineCitation>'
                f"{imgs}</eCitation>"
            ).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{i}.xml")
            info.size = len(xml)
            tar.addfile(info, io.BytesIO(xml))


def test_publish_report_generator(tmp_path, encoder_dir, monkeypatch):
    from transformers import VisionEncoderDecoderModel

    # publish from the folder that holds both the encoder and the run, as a user would: the
    # configs' paths to the encoder become relative (any other absolute path is refused)
    monkeypatch.chdir(tmp_path.parent)

    from genssl_hf.hub.leak import LeakError
    from genssl_hf.hub.publish import publish
    from genssl_hf.training.report_generator_model import build_report_generator, save_report_generator
    from genssl_hf.training.report_generator import write_report_generator_card

    model, proc, rec = build_report_generator(str(encoder_dir), "minilm", decoder_layers=1)
    src = tmp_path / "rg"
    src.mkdir()
    save_report_generator(model, proc, src)
    run = {
        "model": rec,
        "derived": {"image_size": 64, "total_batch_size": 8, "num_train_pairs": 10, "encoder_learning_rate": 1e-4},
        "corpus": {"name": "iu-xray", "license": "CC BY-NC-ND 4.0 (Demner-Fushman et al., JAMIA 2016)"},
    }
    (src / "run_config.json").write_text(json.dumps(run))
    write_report_generator_card(src, run, {"global_step": 1, "final_loss": 1.0, "validation_loss": 1.0})
    card = (src / "README.md").read_text()
    assert "Non-commercial terms inherited" in card and "memorise" in card and "iu-xray" in card
    assert "license: cc-by-nc-nd-4.0" in card

    secret = "Interval development of a moderate right apical pneumothorax measuring twelve millimetres."
    _iu_archive(tmp_path / "reports.tgz", [secret, "Stable mild cardiomegaly without focal airspace disease."])
    res = publish("report_generator", src, dry_run=tmp_path / "out", real_data=[tmp_path / "reports.tgz"])
    shipped = set(res.files)
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "processor_config.json",
        "README.md",
    } <= shipped
    out_card = (tmp_path / "out" / "README.md").read_text()
    assert "cc-by-nc-nd-4.0" in out_card and "training report corpus" in out_card
    VisionEncoderDecoderModel.from_pretrained(tmp_path / "out")
    # a card example that repeats a training report is stopped, naming the card
    (src / "README.md").write_text(card + f"\n## Example outputs\n\n- {secret}\n")
    with pytest.raises(LeakError, match="README"):
        publish("report_generator", src, dry_run=tmp_path / "out2", real_data=[tmp_path / "reports.tgz"])
    # and so is report text in any other shipped file
    (src / "README.md").write_text(card)
    (src / "samples.json").write_text(json.dumps({"generated": [secret]}))
    with pytest.raises(LeakError, match="samples.json"):
        publish("report_generator", src, dry_run=tmp_path / "out3", real_data=[tmp_path / "reports.tgz"])
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_iu_xray_pairs_join_images_to_reports(tmp_path):
    from PIL import Image

    from genssl_hf.training.report_generator import load_report_pairs

    texts = [f"Report {i}: no pleural effusion." for i in range(12)]
    tgz = tmp_path / "reports.tgz"
    _iu_archive(tgz, texts, images_per_report=2)
    (tmp_path / "png").mkdir()
    for i in range(11):  # report 11 has no image
        for v in range(2):
            Image.fromarray(np.full((16, 16), i * 10 + v, np.uint8)).save(tmp_path / "png" / f"CXR{i}_IM-{v}.png")
    parts = load_report_pairs(f"iu-xray:{tmp_path / 'png'}", corpus=f"iu:{tgz}", seed=0)
    assert sum(len(p) for p in parts.values()) == 22
    for _name, p in parts.items():
        for row in range(len(p)):
            r = p[row]
            i = int(np.asarray(r["image"])[0, 0]) // 10
            assert r["text"] == texts[i]  # each image carries its own study's report
    pats = {k: set(v.images["patient_id"]) for k, v in parts.items()}
    assert not (pats["train"] & pats["test"]) and not (pats["train"] & pats["validation"])
    assert parts["train"].provenance["num_reports_without_image"] == 1
    with pytest.raises(ValueError, match="IU report archive"):
        load_report_pairs(f"iu-xray:{tmp_path / 'png'}")


@pytest.mark.slow
def test_training_writes_a_loadable_folder_and_resumes(tmp_path, encoder_dir):
    from transformers import VisionEncoderDecoderModel

    from genssl_hf.training.report_generator import load_report_pairs, train_report_generator

    pairs = load_report_pairs("phantom:16", image_size=64)
    base = (
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "4",
        "--checkpointing_steps",
        "2",
        "--logging_steps",
        "1",
    )
    full = train_report_generator(_train_args(tmp_path / "full", encoder_dir, *base), dataset=pairs)
    assert full["global_step"] == 4 and np.isfinite(full["final_loss"]) and np.isfinite(full["validation_loss"])
    cfg = json.loads((tmp_path / "full" / "run_config.json").read_text())
    assert cfg["model"]["generation"]["no_repeat_ngram_size"] == 3 and cfg["corpus"]["source"] == "phantom"
    assert "memorise" in (tmp_path / "full" / "README.md").read_text()
    VisionEncoderDecoderModel.from_pretrained(tmp_path / "full")
    _reset_accelerate()
    # interrupted after the step-2 checkpoint, resumed: the same weights as the uninterrupted run
    out = tmp_path / "resumed"
    first = train_report_generator(_train_args(out, encoder_dir, *base, "--stop_after_steps", "3"), dataset=pairs)
    assert first["interrupted"] and not (out / "model.safetensors").exists() and (out / "checkpoint-2").is_dir()
    _reset_accelerate()
    train_report_generator(_train_args(out, encoder_dir, *base, "--resume_from_checkpoint", "latest"), dataset=pairs)
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
