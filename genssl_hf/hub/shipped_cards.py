"""The model cards of the shipped weights: their bodies, and the facts of the run filled into them
(steps, settings, portable training commands, downstream numbers). Used by :mod:`genssl_hf.hub.shipped`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..utils import read_json


def _downstream_text(down: Mapping[str, Any]) -> dict[str, str]:
    g, r = down["genssl"], down["random_init"]
    d = g.get("vs_baseline") or {}

    def pct(x):
        return f"{100 * x:.1f}" if x is not None else "n/a"

    return {
        "genssl_auc": f"{pct(g['mean_auc'])} ({pct(g.get('low'))}-{pct(g.get('high'))})",
        "random_auc": f"{pct(r['mean_auc'])} ({pct(r.get('low'))}-{pct(r.get('high'))})",
        "difference": (
            f"{100 * d['difference']:+.1f} ({100 * d['low']:+.1f} to {100 * d['high']:+.1f})" if d else "n/a"
        ),
    }


def _steps(folder: Path) -> str:
    """The optimiser steps a training folder ran: its summary, its Trainer state, or the train state
    of its last checkpoint (the generator trainers checkpoint at their last step)."""
    for name in ("train_summary.json", "trainer_state.json"):
        if (folder / name).is_file():
            data = read_json(folder / name)
            if data.get("global_step", data.get("step")) is not None:
                return str(data.get("global_step", data.get("step")))
    states = sorted(folder.glob("checkpoint-*/train_state.json"), key=lambda p: int(p.parent.name.rsplit("-", 1)[-1]))
    if states:
        return str(read_json(states[-1])["global_step"])
    raise FileNotFoundError(
        f"{folder} holds no record of its training steps (train_summary.json, "
        "trainer_state.json or checkpoint-*/train_state.json)"
    )


def _portable(command: str, run: Path) -> str:
    """A recorded command without this machine's paths: the interpreter as ``python``, the run folder
    as the cards' ``outputs/nih-shipped``, the package's own folders relative to the repository."""
    import shlex

    words = shlex.split(command)
    if words and Path(words[0]).name.startswith("python"):
        words[0] = "python"
    text = shlex.join(words)
    # the run folder the command ran in (<run>/generator/<stage>; the run may have been copied since)
    roots = {str(Path(run).resolve())}
    if "--output_dir" in words[:-1]:
        roots.add(str(Path(words[words.index("--output_dir") + 1]).parents[1]))
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root + os.sep, "outputs/nih-shipped/")
    return text.replace(str(Path(__file__).resolve().parents[2]) + os.sep, "")


def _run_facts(run: Path) -> dict[str, str]:
    """What the cards say about how the run was made: the steps that ran and the run's settings (a
    run recorded before the fine-tuning options took transformers' names says ``epochs``)."""
    cfg = read_json(run / "pipeline_config.json")
    pre, ft = cfg["pretrain"].get("args", {}), cfg["finetune"].get("args", {})
    return {
        "ae_steps": _steps(run / "generator" / "ae"),
        "ldm_steps": _steps(run / "generator" / "ldm"),
        "mae_steps": _steps(run / "mae_genssl" / "model"),
        "num_images": f"{cfg['generation']['num_images']:,}",
        "mae_epochs": str(pre.get("num_train_epochs", "?")),
        "mae_batch": str(pre.get("per_device_train_batch_size", "?")),
        "ft_epochs": str(ft.get("num_train_epochs", ft.get("epochs", "?"))),
        "ft_samples": f"{ft['max_train_samples']:,}" if ft.get("max_train_samples") else "all",
    }


def encoder_use_block(name: str) -> str:
    """The card's code block that loads the shipped encoder ``name`` offline, as ruff formats it (``make
    test`` checks the Python blocks of the package's markdown), shared by every shipped encoder's card."""
    return f"""```python
import genssl_hf
from transformers import AutoImageProcessor, AutoModel, ViTMAEForPreTraining

path = genssl_hf.pretrained_path("genssl_hf/{name}")  # the packaged folder, offline
encoder = AutoModel.from_pretrained(path / "vit")  # ViTModel (last_hidden_state)
mae = ViTMAEForPreTraining.from_pretrained(path)  # encoder + decoder
processor = AutoImageProcessor.from_pretrained(path)  # AdaIN -> normalise -> 3 channels
```"""


def _fill(body: str, facts: Mapping[str, str]) -> str:
    """``body`` with the run's facts in place; the measured numbers are filled in later (``str.format``)."""
    for key, value in facts.items():
        body = body.replace("{" + key + "}", value)
    return body


GENERATOR_BODY = """# nih-ldm-64: a small chest X-ray generator trained on the NIH ChestX-ray14 subset

A text-to-chest-X-ray latent diffusion generator (`genssl_hf.generation.CXRLatentDiffusionPipeline`,
64 x 64, fp16 weights): the shipped phantom generator `genssl_hf/phantom-ldm-64` fine-tuned on the
600 training images of the NIH ChestX-ray14 1,000-image subset, each conditioned on its findings
written as text (`"Effusion. Infiltration."`, `"No finding."`). It knows the 14 NIH findings as
prompts (`"Cardiomegaly."`, `"Pleural Thickening."`, ...) and `"No finding."`.

> Research use only. Not a medical device; not for diagnosis or any clinical decision. Generated
> images are synthetic and must not be presented as real patient images.

## Use

```python
from genssl_hf.generation import CXRLatentDiffusionPipeline

pipe = CXRLatentDiffusionPipeline.from_pretrained("genssl_hf/nih-ldm-64")  # the packaged folder, offline
out = pipe(["Effusion.", "No finding."], num_images_per_prompt=4, num_inference_steps=20,
           guidance_scale=3.0, seeds=list(range(8)))
out.images[0].save("effusion.png")   # out.seeds: the seed of every image
```

## Results (also in this card's model-index)

| what | value |
|---|---|
| autoencoder L1 on the subset's 200 **test** images (never trained on), [0, 1] scale | {autoencoder_l1:.4f} (trivial \
baseline, each image as its own mean value: {image_mean_l1:.4f}) |
| GEN-SSL use: test mean AUC on Kermany pneumonia of a tiny ViT pre-trained (MAE) only on {num_images} images of this \
generator, then fine-tuned ({ft_samples} labelled images) | {genssl_auc} |
| the same ViT from random init | {random_auc} |
| paired difference vs random init (95 % CI) | {difference} |

The numbers come from `python scripts/package_pretrained.py` (see below), on this project's
shared 2-core CPU (one thread per process). The downstream AUC says what pre-training on these images is worth for one
task at this tiny scale; it is not a measure of image realism.

## Training

```bash
python scripts/run_pipeline.py --preset genssl_hf/pipeline/presets/nih-shipped.json --output-dir outputs/nih-shipped
python scripts/package_pretrained.py --run outputs/nih-shipped --real-data ../shared/data
```

The generator stage ran the autoencoder and LDM commands in `training_commands.json` (fine-tuned
from `genssl_hf/phantom-ldm-64`: autoencoder {ae_steps} steps, LDM {ldm_steps} steps, each capped in
minutes; these are the steps that ran).

## Data and attribution

Trained on images of the NIH ChestX-ray14 dataset, provided by the NIH Clinical Center (no
restrictions on use). Cite: Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM, "ChestX-ray8:
Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised Classification and
Localization of Common Thorax Diseases", CVPR 2017, and acknowledge the NIH Clinical Center as
the data provider. No image or label text of the dataset is stored here (leak guard below).

## Limits

- 64 px, 600 training images, a few hundred CPU steps: images are blurry, often washed out (low
  contrast), and lack fine detail; anatomy is only roughly right.
- Whether an image shows the finding of its prompt is not measured (no NIH finding classifier
  good enough to check it exists here); NIH labels are mined from reports and noisy.
- Not validated for anything clinical; do not use it to make real-looking fake patient images.
"""

ENCODER_BODY = (
    """# nih-genssl-mae-64: a GEN-SSL encoder pre-trained only on generated chest X-rays

A tiny ViT masked autoencoder (`ViTMAEForPreTraining`, 64 x 64, patch 8, hidden 128, 4 layers,
mask ratio 0.9) pre-trained **only on {num_images} images generated by `genssl_hf/nih-ldm-64`**, aligned to
real images by AdaIN (its `AdaINImageProcessor` holds the reference statistics: mean and standard
deviation of the Kermany training images, with their provenance; no pixels). `vit/` holds the same
encoder as a plain transformers `ViTModel`.

> Research use only. Not a medical device; not for diagnosis or any clinical decision.

## Use

"""
    + encoder_use_block("nih-genssl-mae-64")
    + """

Fine-tune it: `python scripts/finetune.py --model genssl_hf/nih-genssl-mae-64 --dataset ...`, or
`genssl_hf.training.classifier.build_classifier("genssl_hf/nih-genssl-mae-64", labels, multi_label=True)`.

## Results (also in this card's model-index)

| what | value |
|---|---|
| MAE loss (normalised-pixel MSE on masked patches, mask 0.9, seed 0) on the NIH subset's 200 **real** test images | \
{mae_loss:.4f} (predict-the-mean baseline: {mean_patch_loss:.4f}) |
| test mean AUC on Kermany pneumonia after fine-tuning ({ft_samples} labelled images, {ft_epochs} epochs) | \
{genssl_auc} |
| the same ViT from random init | {random_auc} |
| paired difference vs random init (95 % CI) | {difference} |

Kermany split: the training split cut patient-disjoint and stratified (seed 0) into train /
validation 15 % / test 20 %; model selection on validation only. On the shared 2-core CPU of
this project (one thread per process).

## Training

```bash
python scripts/run_pipeline.py --preset genssl_hf/pipeline/presets/nih-shipped.json --output-dir outputs/nih-shipped
python scripts/package_pretrained.py --run outputs/nih-shipped --real-data ../shared/data
```

Pre-training: {mae_steps} optimiser steps ({mae_epochs} epochs over the {num_images} generated images, batch \
{mae_batch},
bf16), the MAE recipe's initialisation (2-D sin-cos position tables) from `genssl_hf.training.mae_init`.

## Data and attribution

Pre-training saw generated images only. Their generator was trained on the NIH ChestX-ray14 subset
(NIH Clinical Center; cite Wang et al., CVPR 2017). The AdaIN statistics and the fine-tuning
results use the Kermany paediatric pneumonia images (CC BY 4.0; Kermany, Zhang, Goldbaum 2018,
doi:10.17632/rscbjbr9sj.2). No real image is stored here (leak guard below).

## Limits

- Tiny (0.8 M encoder parameters) and 64 px: a demonstration of the method that loads at once,
  not a strong chest X-ray encoder.
- The downstream result is one task, one seed, and a short fine-tuning ({ft_epochs} epochs on
  {ft_samples} images): a short schedule favours any pre-trained start over random init, so the
  gap over random init says the encoder transfers, not how large GEN-SSL's benefit is under a full
  schedule: in this project's benchmarks (BENCHMARKS.md, Kermany, longer fine-tuning) random init
  reaches about 89-90 mean AUC and GEN-SSL's gain was between none and +3 points, so a fully
  fine-tuned random init beats the short-schedule number above. There is no comparison here with
  an MAE pre-trained on real images.
- The fine-tuned classifiers' decisions at validation-chosen thresholds stayed near chance
  (balanced accuracy about 0.5): at this size only the ranking (AUC) is informative.
- This recipe (2,000 generated images, 60 epochs) was chosen over the smaller one (750 images,
  25 epochs) by the validation mean AUC after fine-tuning (0.790 vs 0.622), never by test results.
"""
)
