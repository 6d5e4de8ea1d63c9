"""The pipeline config: presets with ``--set`` overrides, validation before any stage runs, and the
fine-tuning runs a config asks for (label fractions x seeds)."""

from __future__ import annotations

import json
from pathlib import Path

from ..utils import read_json
from .launch import check_generation_launch
from .schema import config_problems, schema_node
from .ssl_variants import validate_ssl_variants
from .variants import VARIANTS

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def load_preset(name_or_path: str, overrides: list[str] | None = None) -> dict:
    """A preset by name (``smoke``, ``demo``, ``paper``) or a JSON config path, with ``a.b=value``
    overrides (values parsed as JSON when they parse, else kept as strings)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
        raise FileNotFoundError(f"pipeline preset {name_or_path!r} not found (known presets: {known})")
    config = read_json(path)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form key.path=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        parts = key.split(".")
        _, problem = schema_node(parts)  # never create a key the schema does not know
        if problem:
            raise ValueError(f"--set {item}: {problem}")
        node = config
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    validate_config(config)
    return config


def check_generation_sampler(config: dict) -> None:
    """``generation.sampler``: a preset of ``GENERATION_PRESETS``, for a trained (diffusion) generator;
    the phantom oracle renders without denoising steps, so a sampler there is refused, before any stage."""
    sampler = config.get("generation", {}).get("sampler")
    if sampler is None:
        return
    from ..generation.schedulers import check_sampler_name

    check_sampler_name(sampler, "generation.sampler")
    if config.get("generator", {}).get("source") == "phantom-oracle":
        raise ValueError(
            f"generation.sampler {sampler!r}: generator.source 'phantom-oracle' renders its images directly, "
            "with no denoising steps to sample; leave generation.sampler unset or train a generator"
        )


def validate_config(config: dict) -> None:
    """Clear errors for a malformed config, before any stage runs."""
    problems = config_problems(config)
    if problems:
        raise ValueError(
            f"pipeline config {config.get('name', '?') if isinstance(config, dict) else '?'!r} has "
            f"{len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )
    for key in ("name", "seed", "image_size", "real_data", "generation", "pretrain", "finetune"):
        if key not in config:
            raise KeyError(f"pipeline config {config.get('name', '?')!r} lacks the section {key!r}")
    unknown = set(config.get("variants", VARIANTS)) - set(VARIANTS) - set(config.get("ssl_variants", {}))
    if unknown:
        raise ValueError(
            f"unknown variants {sorted(unknown)}; known: {list(VARIANTS) + list(config.get('ssl_variants', {}))}"
        )
    validate_ssl_variants(config)
    check_generation_launch(config)
    check_generation_sampler(config)
    check_size_multiples(config)
    finetune_runs(config)  # checks the label fractions and seeds
    source = config["real_data"].get("source", "phantom")
    from ..data.registry import DATASET_SCHEMES

    sources = ("phantom", "folder", *DATASET_SCHEMES)  # a new registry scheme is a source here too
    if source not in sources:
        raise ValueError(f"real_data.source must be one of {', '.join(sources)}, got {source!r}")
    if source != "phantom" and not config["real_data"].get("path"):
        raise ValueError(f"real_data.source {source!r} needs real_data.path")
    generator = config.get("generator", {})
    if generator.get("source") == "train":  # its images and reports: a registry scheme, or a folder with text
        if generator.get("dataset") not in (None, *DATASET_SCHEMES):
            raise ValueError(
                f"generator.dataset must be one of {', '.join(DATASET_SCHEMES)}, got {generator['dataset']!r}"
            )
        if not generator.get("path"):
            raise ValueError("generator.source 'train' needs generator.path")


def check_size_multiples(config: dict) -> None:
    """``image_size`` (e.g. from ``--set image_size=60``) must split into whole patches for every
    ViT the config trains, and the generated size must be a multiple of the shipped generator's
    latent downsampling: checked here, not three stages in."""
    from ..models.presets import VIT_MAE_PRESETS

    size = int(config["image_size"])
    models = {
        "pretrain.args.model": config.get("pretrain", {}).get("args", {}).get("model"),
        "finetune.random_init_preset": config.get("finetune", {}).get("random_init_preset", "tiny"),
        "ssl_pretrain.args.model": config.get("ssl_pretrain", {}).get("args", {}).get("model"),
    }
    models.update({f"ssl_variants.{n}.backbone": v.get("backbone") for n, v in config.get("ssl_variants", {}).items()})
    patch_override = config.get("pretrain", {}).get("args", {}).get("patch_size")
    for where, model in models.items():
        if model not in VIT_MAE_PRESETS:
            continue
        patch = int(
            patch_override if where.startswith("pretrain") and patch_override else VIT_MAE_PRESETS[model]["patch_size"]
        )
        if size % patch:
            raise ValueError(
                f"image_size {size} is not a multiple of the patch size {patch} of {where} {model!r}; "
                f"use a multiple of {patch} (e.g. {max(patch, size // patch * patch)} or {(size // patch + 1) * patch})"
            )
    if config.get("generator", {"source": "shipped"}).get("source", "shipped") == "shipped":
        from ..generation.materialize.generators import _check_pipeline_size
        from ..generation.pretrained import PHANTOM_GENERATOR_DIR

        gen_size = int(config.get("generation", {}).get("image_size", size))
        try:
            _check_pipeline_size(PHANTOM_GENERATOR_DIR, gen_size, gen_size)
        except ValueError as e:
            raise ValueError(f"image_size / generation.image_size {gen_size}: {e}") from None


def label_fractions(cfg: dict) -> list[float]:
    """The label fractions fine-tuning runs at (``finetune.label_fractions``, default: the single
    ``finetune.args.label_fraction`` or 1.0)."""
    ft = cfg["finetune"]
    fractions = ft.get("label_fractions") or [ft.get("args", {}).get("label_fraction", 1.0)]
    for f in fractions:
        if not 0.0 < float(f) <= 1.0:
            raise ValueError(f"label fraction {f!r} must lie in (0, 1]")
    return [float(f) for f in fractions]


def fraction_suffix(cfg: dict, fraction: float) -> str:
    """Stage-name suffix: none for a single fraction, ``_f10`` (percent) when several are run."""
    if len(label_fractions(cfg)) == 1:
        return ""
    return f"_f{fraction * 100:g}".replace(".", "p")


def finetune_runs(cfg: dict) -> list[tuple[float, int, str]]:
    """(label fraction, fine-tuning seed, stage-name suffix) of every fine-tuning run.

    ``finetune.seeds`` repeats the runs at the fractions in ``finetune.seed_fractions`` (default: all)
    with other seeds, i.e. other label subsets, head inits and batch orders; the first seed's runs keep
    the plain suffix, the others add ``_s<seed>``. Without ``seeds`` each fraction runs once at ``seed``.
    """
    ft = cfg["finetune"]
    seeds = [int(x) for x in (ft.get("seeds") or [cfg["seed"]])]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"finetune.seeds {seeds} repeats a seed")
    fractions = label_fractions(cfg)
    repeated = {float(f) for f in (ft.get("seed_fractions") or fractions)}
    unknown = repeated - set(fractions)
    if unknown:
        raise ValueError(f"finetune.seed_fractions {sorted(unknown)} are not among the label fractions {fractions}")
    runs = []
    for fraction in fractions:
        for i, seed in enumerate(seeds if fraction in repeated else seeds[:1]):
            runs.append((fraction, seed, fraction_suffix(cfg, fraction) + (f"_s{seed}" if i else "")))
    return runs


def generation_keys(gen: dict) -> dict:
    """The generation settings the generated dataset depends on: not ``num_processes`` (sample i
    depends on the prompt set, the number of images, the seed and i only), so generating on more
    processes reruns no stage, and a config without the key keeps its stages' fingerprints. A
    ``sampler`` of null is no sampler: left out, so the stages keep the fingerprints they had before
    the key existed."""
    return {k: v for k, v in gen.items() if k != "num_processes" and not (k == "sampler" and v is None)}


def _without_seed_keys(ft: dict) -> dict:
    """The fine-tuning config a single run depends on (adding a seed must not rerun the others)."""
    return {k: v for k, v in ft.items() if k not in ("seeds", "seed_fractions")}
