"""The weights shipped inside the package: how they are measured and packaged.

``python scripts/package_pretrained.py --run outputs/nih-shipped --real_data ../shared/data`` turns
the run of the ``nih-shipped`` preset into two folders inside the package, each loadable offline
by its ``genssl_hf/<name>`` name (:func:`genssl_hf.utils.pretrained_path`):

- ``genssl_hf/nih-ldm-64``: the NIH ChestX-ray14 generator (fp16 safetensors, text encoder from
  the installed MiniLM package);
- ``genssl_hf/nih-genssl-mae-64``: the GEN-SSL MAE encoder pre-trained only on that generator's
  images (with its AdaINImageProcessor, and ``vit/``: the encoder as a plain ``ViTModel``).

``--protocol-encoder`` packages a third, ``genssl_hf/nih-genssl-mae-64-protocol``: the GEN-SSL encoder
chosen on validation among the arms of a protocol run (:mod:`genssl_hf.hub.shipped_protocol`).

Each goes through :func:`genssl_hf.hub.publish.publish` (dry run): validation, the card with its
provenance, and the real-data leak guard over every file. The card's ``model-index`` holds the
numbers measured here; :func:`measure_autoencoder` and :func:`measure_mae` recompute them (the
tests check that the shipped folders still score what their cards say).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..typed_args import options_to_argv
from ..utils import PRETRAINED, read_json
from .publish import publish
from .shipped_cards import ENCODER_BODY, GENERATOR_BODY, _downstream_text, _fill, _portable, _run_facts

__all__ = [
    "measure_autoencoder",
    "measure_mae",
    "nih_test_images",
    "package_generator",
    "package_encoder",
    "recorded_commands",
    "MEASURE_SEED",
    "card_results",
]

MEASURE_SEED = 0  # the MAE masks of the measurement


def recorded_commands(folder: Path, run: Path) -> dict[str, str]:
    """The commands a stage folder recorded (``<name>.txt``), each self-contained and without this
    machine's paths: a command that read its options from ``<name>_config.json`` has them inline."""
    commands = {}
    for path in sorted(folder.glob("*.txt")):
        words = shlex.split(path.read_text().strip())
        config = folder / f"{path.stem}_config.json"
        if words and config.is_file() and Path(words[-1]) == config:
            words = words[:-1] + options_to_argv(read_json(config))
        commands[path.stem] = _portable(shlex.join(words), run)
    return commands


def nih_test_images(nih_root: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """The NIH ChestX-ray14 subset's test images as uint8 ``(N, 64, 64)`` (the measurement set)."""
    from ..data import load_nih_subset

    ds = load_nih_subset(str(nih_root), split="test")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return np.stack([np.asarray(im.convert("L"), dtype=np.uint8) for im in ds["image"]])


@torch.no_grad()
def measure_autoencoder(pipe: Any, images: np.ndarray, batch_size: int = 50) -> dict[str, float]:
    """Mean absolute error on [0, 1] of the generator's autoencoder (encode -> mean latent -> decode) on
    ``images``, next to the trivial baseline that predicts each image as its own mean value."""
    vae = pipe.vae.float().eval()
    errors, baseline = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size].astype(np.float32) / 255.0)[:, None]
        z_mu, _ = vae.encode(x)  # the MONAI autoencoder: images on [0, 1] in and out; the mean latent
        recon = vae.decode(z_mu).float().clamp(0, 1)
        errors.append((recon - x).abs().mean(dim=(1, 2, 3)))
        baseline.append((x - x.mean(dim=(2, 3), keepdim=True)).abs().mean(dim=(1, 2, 3)))
    return {
        "autoencoder_l1": round(float(torch.cat(errors).mean()), 5),
        "image_mean_l1": round(float(torch.cat(baseline).mean()), 5),
    }


@torch.no_grad()
def measure_mae(
    folder: str | os.PathLike, images: np.ndarray, seed: int = MEASURE_SEED, batch_size: int = 50
) -> dict[str, float]:
    """The MAE loss of the encoder folder on ``images`` (its own processor: AdaIN, normalisation;
    its own mask ratio; masks from ``seed``), next to predict-the-mean: every masked patch predicted
    as the mean target patch of the whole set (the best constant)."""
    import genssl_hf  # noqa: F401  (AutoImageProcessor -> AdaINImageProcessor)
    from transformers import AutoImageProcessor, ViTMAEForPreTraining

    from genssl_hf.evaluation.reconstruction import masked_reconstruction_losses

    model = ViTMAEForPreTraining.from_pretrained(str(folder)).eval()
    processor = AutoImageProcessor.from_pretrained(str(folder))
    pixels = processor(list(images), return_tensors="pt")["pixel_values"]
    # the baselines from the measured images themselves; masks drawn batch by batch from ``seed``
    losses = masked_reconstruction_losses(model, pixels, seed=seed, batch_size=batch_size)
    return {"mae_loss": round(losses["model"], 5), "mean_patch_loss": round(losses["best_constant_patch"], 5)}


def _eval_result(name: str, split: str, metric: str, value: float, metric_type: str):
    from huggingface_hub import EvalResult

    return EvalResult(
        task_type="image-classification" if metric_type == "roc_auc" else "image-to-image",
        dataset_type="custom",
        dataset_name=name,
        dataset_split=split,
        metric_type=metric_type,
        metric_name=metric,
        metric_value=float(value),
    )


def card_results(card_path: str | os.PathLike) -> dict[str, float]:
    """``{metric name: value}`` of a card's model-index (what a test compares a re-measurement with)."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(card_path))
    return {r.metric_name: float(r.metric_value) for r in (card.data.eval_results or [])}


def _finish_card(folder: Path, name: str, results: Sequence[Any]) -> None:
    from huggingface_hub import ModelCard

    from .card_metadata import tidy_metadata

    card = ModelCard.load(str(folder / "README.md"))
    card.data.model_name = name
    card.data.eval_results = list(results)
    tidy_metadata(card.data, is_dataset=False)  # differences stay in the card's text, not the model-index
    card.save(str(folder / "README.md"))


def _downstream(run: Path) -> dict[str, Any]:
    """Test mean AUC of GEN-SSL and random init on the run's real task, with the paired difference."""
    comparison = read_json(next(iter(sorted(run.glob("evaluation*/results/comparison.json")))))
    rows = {r["variant"]: r for r in comparison["rows"]}
    return {"genssl": rows["genssl"], "random_init": rows["random_init"]}


def _replace_folder(staged: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.move(str(staged), str(dest))


NIH_TEST = "NIH ChestX-ray14 subset (test, 200 images, 64 px)"


def mae_loss_results(measured: dict[str, float], folder: Path) -> list[Any]:
    """The model-index entries of :func:`measure_mae` (the name carries the folder's mask ratio)."""
    mask = read_json(Path(folder) / "config.json").get("mask_ratio", 0.75)
    return [
        _eval_result(NIH_TEST, "test", f"MAE loss (mask {mask:g})", measured["mae_loss"], "mse"),
        _eval_result(NIH_TEST, "test", "predict-the-mean loss (trivial baseline)", measured["mean_patch_loss"], "mse"),
    ]


def ship_encoder(
    src: Path,
    dest: Path,
    card_text: str,
    results: Sequence[Any],
    *,
    real_data: Sequence[str],
    datasets: Sequence[str],
    extra_files: dict[str, str] | None = None,
    rewrite: Callable[[str], str] | None = None,
) -> None:
    """The MAE folder ``src`` (no checkpoints, logs or lock files) with ``card_text`` as its card and
    ``extra_files`` (name -> text) beside it, through the publisher's dry run (leak guard on; adds
    ``vit/``) into ``dest``, with ``results`` in its model-index. ``rewrite`` maps the text of the
    copied JSON records (their paths of the run's machine) before the publisher checks them."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="genssl-ship-enc-") as tmp:
        staged = Path(tmp) / dest.name
        ignore = shutil.ignore_patterns("checkpoint*", "logs", "runs", "*.log", ".genssl-*")
        shutil.copytree(src, staged, ignore=ignore)
        (staged / "README.md").write_text(card_text, encoding="utf-8")
        for record in staged.glob("*.json") if rewrite else ():
            record.write_text(rewrite(record.read_text(encoding="utf-8")), encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (staged / name).write_text(text, encoding="utf-8")
        out = Path(tmp) / "out"
        publish(
            "encoder",
            staged,
            dry_run=out,
            real_data=list(real_data),
            license="apache-2.0",
            include_images=True,
            datasets=list(datasets),
            base_model=None,
        )
        _finish_card(out, dest.name, results)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _replace_folder(out, dest)


def package_generator(
    run: str | os.PathLike,
    dest: str | os.PathLike,
    body: str,
    *,
    real_data: Sequence[str],
    nih_root: str | os.PathLike,
    task_name: str,
) -> dict[str, Any]:
    """The run's generator, cast to fp16, with ``body`` as its card text, through the publisher's
    dry run (leak guard on) into ``dest``; its card's model-index gets the measured results."""
    from ..generation import CXRLatentDiffusionPipeline

    run, dest = Path(run), Path(dest)
    pipe = CXRLatentDiffusionPipeline.from_pretrained(run / "generator" / "generator")
    down = _downstream(run)
    with tempfile.TemporaryDirectory(prefix="genssl-ship-gen-") as tmp:
        staged = Path(tmp) / dest.name
        pipe.unet.half()
        pipe.vae.half()
        pipe.save_pretrained(staged)
        # measured as shipped: the fp16 weights, loaded back (to float32) as users load them
        measured = measure_autoencoder(CXRLatentDiffusionPipeline.from_pretrained(staged), nih_test_images(nih_root))
        (staged / "README.md").write_text(body.format(**measured, **_downstream_text(down)), encoding="utf-8")
        commands = recorded_commands(run / "generator", run)
        (staged / "training_commands.json").write_text(json.dumps(commands, indent=2) + "\n")
        out = Path(tmp) / "out"
        publish(
            "generator",
            staged,
            dry_run=out,
            real_data=list(real_data),
            license="apache-2.0",
            datasets=["NIH ChestX-ray14 (NIH Clinical Center), 600-image training subset at 64 px"],
            base_model="genssl_hf/phantom-ldm-64",  # the generator stage fine-tunes the shipped phantom one
        )
        _finish_card(
            out,
            dest.name,
            [
                _eval_result(
                    NIH_TEST,
                    "test",
                    "autoencoder L1",
                    measured["autoencoder_l1"],
                    "l1",
                ),
                _eval_result(
                    NIH_TEST,
                    "test",
                    "image-mean L1 (trivial baseline)",
                    measured["image_mean_l1"],
                    "l1",
                ),
                _eval_result(
                    task_name,
                    "test",
                    "mean AUC of a GEN-SSL encoder pre-trained on its images",
                    down["genssl"]["mean_auc"],
                    "roc_auc",
                ),
                _eval_result(
                    task_name,
                    "test",
                    "mean AUC of the random-init baseline",
                    down["random_init"]["mean_auc"],
                    "roc_auc",
                ),
            ],
        )
        _replace_folder(out, dest)
    return {"measured": measured, "downstream": down}


def package_encoder(
    run: str | os.PathLike,
    dest: str | os.PathLike,
    body: str,
    *,
    real_data: Sequence[str],
    nih_root: str | os.PathLike,
    task_name: str,
) -> dict[str, Any]:
    """The run's GEN-SSL MAE encoder with ``body`` as its card text, through the publisher's dry run
    (leak guard on; adds ``vit/``) into ``dest``, with the measured results in its model-index."""
    run, dest = Path(run), Path(dest)
    src = run / "mae_genssl" / "model"
    measured = measure_mae(src, nih_test_images(nih_root))
    down = _downstream(run)
    d = down["genssl"].get("vs_baseline") or {}
    results = [
        *mae_loss_results(measured, src),
        _eval_result(task_name, "test", "mean AUC (fine-tuned)", down["genssl"]["mean_auc"], "roc_auc"),
        _eval_result(
            task_name, "test", "mean AUC of the random-init baseline", down["random_init"]["mean_auc"], "roc_auc"
        ),
    ]
    if d:
        results.append(
            _eval_result(task_name, "test", "AUC difference vs random init (paired)", d["difference"], "roc_auc")
        )
    ship_encoder(
        src,
        dest,
        body.format(**measured, **_downstream_text(down)),
        results,
        real_data=real_data,
        datasets=["images generated by genssl_hf/nih-ldm-64 (no real images)"],
    )
    return {"measured": measured, "downstream": down}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from genssl_hf.typed_args import hidden_aliases

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--protocol-encoder" in argv or "--protocol_encoder" in argv:
        from .shipped_protocol import main as protocol_main  # the encoder chosen under the protocol

        return protocol_main([a for a in argv if a not in ("--protocol-encoder", "--protocol_encoder")])
    parser = argparse.ArgumentParser(
        description="Package the shipped NIH generator and GEN-SSL encoder "
        "(with --protocol-encoder: the GEN-SSL encoder chosen under the protocol, see --protocol-encoder --help)."
    )
    parser.add_argument("--run", required=True, help="a finished run of the nih-shipped preset")
    parser.add_argument("--real_data", default="../shared/data", help="the real data folder (leak guard, measurement)")
    args = hidden_aliases(parser, {"--real-data": "--real_data"}).parse_args(argv)
    run, shared = Path(args.run), Path(args.real_data)
    nih = shared / "nih-cxr14-1000-64px"
    for need in (
        run / "pipeline_config.json",
        run / "generator" / "generator" / "model_index.json",
        run / "mae_genssl" / "model" / "config.json",
        nih,
    ):
        if not need.exists():
            raise SystemExit(f"missing {need}: run the nih-shipped preset first, and pass --real_data")
    real = [str(nih), str(shared / "kermany-pneumonia-224")]
    task = "Kermany paediatric pneumonia (patient-disjoint test split of the training set, 64 px)"
    facts = _run_facts(run)
    gen = package_generator(
        run, shipped_folder("nih-ldm-64"), _fill(GENERATOR_BODY, facts), real_data=real, nih_root=nih, task_name=task
    )
    enc = package_encoder(
        run,
        shipped_folder("nih-genssl-mae-64"),
        _fill(ENCODER_BODY, facts),
        real_data=real,
        nih_root=nih,
        task_name=task,
    )
    print(
        json.dumps(
            {"generator": gen["measured"], "encoder": enc["measured"], "downstream": enc["downstream"]},
            indent=2,
            default=str,
        )
    )
    return 0


def shipped_folder(name: str) -> Path:
    """The packaged folder of ``genssl_hf/<name>`` (it may not exist yet)."""
    return Path(__file__).resolve().parents[1] / PRETRAINED[name]
