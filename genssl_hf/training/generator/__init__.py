"""Training the text-to-CXR generator: the autoencoder (stage 1) and the latent diffusion UNet (stage 2).

Recipe of the MONAI CXR latent-diffusion bundle / MONAI Generative Models tutorials:

* **Autoencoder** (``train_autoencoder``): L1 reconstruction + ``kl_weight`` * KL(q(z|x) || N(0, I))
  + ``adv_weight`` * least-squares PatchGAN adversarial loss (MONAI ``PatchDiscriminator`` and
  ``PatchAdversarialLoss``; the discriminator starts after ``adv_start_step`` steps); an optional
  perceptual loss (MONAI ``PerceptualLoss``, off by default because its weights are downloaded).
* **LDM** (``train_ldm``): frozen autoencoder and frozen text encoder; latents scaled by
  ``scale_factor`` = 1 / std of the latents of the training data (estimated before step 1 unless
  given); v-prediction MSE under the bundle's scaled-linear schedule; the prompt is replaced by the
  empty prompt with probability ``prompt_dropout`` (0.1) so the model also learns the unconditional
  branch used by classifier-free guidance.

Both are tasks on the shared engine (:class:`~genssl_hf.training.engine.Engine`) run under
``accelerate`` (``accelerate launch scripts/train_*.py``), on any ``datasets`` image dataset with a
text column, with checkpoints every K steps and exact resume, bf16 autocast, a wall-clock box
(``--max_train_minutes``), and write their final artifact atomically:
``<output_dir>/autoencoder`` (a ``CXRAutoencoderKL`` folder) and ``<output_dir>/pipeline`` (a
``CXRLatentDiffusionPipeline`` folder) plus a sample grid PNG per validation prompt.

Modules: :mod:`.data` (image-text datasets, prompt augmentation), :mod:`.args` (the two parsers),
:mod:`.autoencoder` (the autoencoder task and run), :mod:`.ldm` (the LDM task and run),
:mod:`.bundle` (loading the frozen parts, writing the pipeline folder).
"""

from .autoencoder import autoencoder_main, kl_loss, train_autoencoder
from .args import autoencoder_parser, ldm_parser
from .data import DEFAULT_PHANTOM_PROMPTS, load_image_text_dataset, prepare_texts
from .ldm import estimate_scale_factor, ldm_main, train_ldm

__all__ = [
    "load_image_text_dataset",
    "prepare_texts",
    "kl_loss",
    "estimate_scale_factor",
    "train_autoencoder",
    "train_ldm",
    "autoencoder_main",
    "ldm_main",
    "autoencoder_parser",
    "ldm_parser",
    "DEFAULT_PHANTOM_PROMPTS",
    "main",
]


def main(argv: list[str] | None = None):
    """``python -m genssl_hf.training.generator {autoencoder,ldm} ...``"""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("autoencoder", "ldm"):
        raise SystemExit("usage: python -m genssl_hf.training.generator {autoencoder,ldm} [options]")
    return (autoencoder_main if argv[0] == "autoencoder" else ldm_main)(argv[1:])
