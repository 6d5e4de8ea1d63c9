"""The stages of a pipeline run, one builder per stage: each returns a :class:`~.stages.Stage`
(its config keys, its ``run(folder)`` and the outputs that make it valid)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..utils import read_json
from .config import _without_seed_keys, fraction_suffix, generation_keys, label_fractions
from .launch import _jsonable, _run_command, generation_launcher, generation_processes, stage_command
from .stages import Stage
from .variants import VARIANT_PRETRAIN, VLP_TITLE, variant_title


def _phantom_config(section: dict):
    from ..data.phantom import PhantomConfig

    return PhantomConfig.from_dict(section.get("phantom", {}))


def _load_real_splits(cfg: dict, folder: Path):
    """The labelled real data as a DatasetDict with train / validation / test: the phantom world, a
    ``folder`` (``load_dataset`` / ``save_to_disk``), or any scheme of the dataset registry
    (``genssl list dataset_schemes``) at ``real_data.path``. Splits the source lacks are carved from
    its train split (validation first, then test; by patient where the rows name one)."""
    import datasets

    real = cfg["real_data"]
    source = real.get("source", "phantom")
    seed = cfg["seed"]
    if source == "phantom":
        from ..data.phantom import phantom_splits

        return phantom_splits(
            real["sizes"],
            size=cfg["image_size"],
            seed=seed + 1000,
            config=_phantom_config(real),
            cache_dir=str(folder / ".cache"),
        )
    from ..data import stratified_split
    from ..data.registry import open_labelled_dataset

    splits = dict(open_labelled_dataset(real["path"] if source == "folder" else f"{source}:{real['path']}"))
    train = splits["train"]
    group_by = "patient_id" if "patient_id" in train.column_names else None
    if "validation" not in splits:
        carved = stratified_split(train, real.get("validation_fraction", 0.2), seed=seed, group_by=group_by)
        train, splits["validation"] = carved["train"], carved["validation"]
    if "test" not in splits:
        held = stratified_split(train, real.get("test_fraction", 0.2), seed=seed + 1, group_by=group_by)
        train, splits["test"] = held["train"], held["validation"]
    return datasets.DatasetDict(train=train, validation=splits["validation"], test=splits["test"])


def stage_real_data(cfg: dict) -> Stage:
    def run(folder: Path) -> dict:
        from ..data.adapters import embed_images
        from ..data.export import export_parquet

        splits = _load_real_splits(cfg, folder)
        # Training and evaluation need images and labels only; report text never enters the run.
        keep = ("image", "labels", "label", "patient_id", "study_id", "view", "source", "subtype", "seed")
        splits = {k: v.select_columns([c for c in v.column_names if c in keep]) for k, v in splits.items()}
        if cfg["real_data"].get("source", "phantom") != "phantom":
            splits = {k: embed_images(v) for k, v in splits.items()}
        export_parquet(
            splits,
            folder / "dataset",
            overwrite=True,
            card_body="# Labelled real-domain split of a genssl_hf pipeline run\n\n"
            "Local working copy for training and evaluation. Never published.",
        )
        shutil.rmtree(folder / ".cache", ignore_errors=True)
        return {"dataset": "dataset", "sizes": {k: len(v) for k, v in splits.items()}}

    keys = {k: cfg[k] for k in ("real_data", "image_size", "seed")}
    return Stage("real_data", keys, run, outputs=["dataset/README.md"])


def stage_real_unlabelled(cfg: dict, real_dir: Path) -> Stage:
    """Unlabelled real-domain images for the MAE-on-real baseline: as many as are generated when the
    real world can render them (phantoms), else the real training split itself."""

    def run(folder: Path) -> dict:
        import datasets

        from ..data.export import export_parquet
        from ..data.phantom import phantom_dataset

        real = cfg["real_data"]
        n = cfg["generation"]["num_images"]
        if real.get("source", "phantom") == "phantom":
            ds = phantom_dataset(
                n,
                size=cfg["image_size"],
                seed=cfg["seed"] + 1000,
                config=_phantom_config(real),
                split="unlabelled",
                cache_dir=str(folder / ".cache"),
            )
        else:  # the real training images themselves, at most as many as are generated
            ds = datasets.load_dataset(str(real_dir / "dataset"), split="train")
            ds = ds.shuffle(seed=cfg["seed"]).select(range(min(n, len(ds))))
        ds = ds.select_columns(["image"])
        export_parquet(ds, folder / "dataset", overwrite=True, card_body="# Unlabelled real-domain images (local only)")
        shutil.rmtree(folder / ".cache", ignore_errors=True)
        return {"dataset": "dataset", "num_images": len(ds)}

    return Stage(
        "real_unlabelled",
        {k: cfg[k] for k in ("real_data", "image_size", "seed")} | {"n": cfg["generation"]["num_images"]},
        run,
        outputs=["dataset/README.md"],
    )


def stage_prompt_set(cfg: dict) -> Stage:
    def run(folder: Path) -> dict:
        from ..prompts import PromptSet

        spec = cfg.get("prompts", {"set": "heuristic"})
        if "custom" in spec:  # e.g. [{"text": "Effusion.", "disease": "Effusion"}, ...]
            prompts = PromptSet(spec["custom"], strategy="custom", name=spec.get("name", f"{cfg['name']}-prompts"))
        else:
            prompts = PromptSet.from_pretrained(spec.get("set", "heuristic"))
        prompts.save_pretrained(folder / "prompt_set", overwrite=True)
        return {"prompt_set": "prompt_set", "num_prompts": len(prompts.texts), "fingerprint": prompts.fingerprint}

    return Stage(
        "prompt_set", {"prompts": cfg.get("prompts", {"set": "heuristic"})}, run, outputs=["prompt_set/prompts.json"]
    )


def _generation_settings(cfg: dict, generator_dir: Path, prompt_dir: Path) -> dict:
    """The generator spec and the ``generate_dataset`` settings of the ``generated_dataset`` stage."""
    gen = cfg["generation"]
    oracle = (generator_dir / "generator.json").is_file()
    settings = dict(
        generator="phantom" if oracle else str(generator_dir / "generator"),
        prompts=str(prompt_dir / "prompt_set"),
        num_images=gen["num_images"],
        seed=cfg["seed"],
        batch_size=gen.get("batch_size", 64),
        height=gen.get("image_size", cfg["image_size"]),
        width=gen.get("image_size", cfg["image_size"]),
        # with generation.sampler and no step count: the preset's steps (None); without: 25
        num_inference_steps=gen.get("num_inference_steps", None if gen.get("sampler") else 25),
        guidance_scale=gen.get("guidance_scale", 3.0),
        shard_size=gen.get("shard_size", "256MB"),
        call_kwargs={"dtype": gen["dtype"]} if gen.get("dtype") else None,
    )
    if gen.get("sampler"):  # only when set: the settings of a run without one are as they were
        settings["sampler"] = gen["sampler"]
    return settings


def _generate_in_processes(cfg: dict, folder: Path, settings: dict, log) -> dict:
    """``generation.num_processes`` > 1: ``genssl generate`` through ``accelerate launch
    --num_processes N`` (the config's launcher), each rank writing its own shards of the same dataset
    (sample i depends on (prompt set, N images, seed, i) only, so it equals the one-process dataset)."""
    from ..generation.materialize import VERIFICATION_NAME

    options = {
        "pipeline": settings["generator"],
        "prompts": settings["prompts"],
        "num_images": settings["num_images"],
        "seed": settings["seed"],
        "batch_size": settings["batch_size"],
        "height": settings["height"],
        "width": settings["width"],
        "num_inference_steps": settings["num_inference_steps"],
        "guidance_scale": settings["guidance_scale"],
        **({"sampler": settings["sampler"]} if settings.get("sampler") else {}),
        "shard_size": str(settings["shard_size"]),
        "pipeline_kwargs": settings["call_kwargs"],  # a mapping: written as its JSON text
        "output_dir": str(folder / "dataset"),
        "overwrite": True,
    }
    launched = dict(cfg, launcher=generation_launcher(cfg))
    _run_command(stage_command(launched, folder, ["generate"], options), folder, log)
    verification = read_json(folder / "dataset" / VERIFICATION_NAME)
    return {"num_processes": generation_processes(cfg), "verification": verification}


def stage_generated_dataset(cfg: dict, generator_dir: Path, prompt_dir: Path, log=print) -> Stage:
    def run(folder: Path) -> dict:
        gen = cfg["generation"]
        settings = _generation_settings(cfg, generator_dir, prompt_dir)
        if generation_processes(cfg) > 1:
            result = _generate_in_processes(cfg, folder, settings, log)
        else:
            from ..generation.materialize import generate_dataset

            generator = settings.pop("generator")
            result = generate_dataset(folder / "dataset", generator, **settings, overwrite=True, progress=True)
        return {"dataset": "dataset", "num_images": gen["num_images"], "result": _jsonable(result)}

    return Stage(
        "generated_dataset",
        {
            "generation": generation_keys(cfg["generation"]),
            "seed": cfg["seed"],
            "size": cfg["image_size"],
            "generator": cfg.get("generator"),
            "prompts": cfg.get("prompts"),
        },
        run,
        outputs=["dataset/README.md"],
    )


def stage_reference_stats(cfg: dict, real_dir: Path) -> Stage:
    def run(folder: Path) -> dict:
        import datasets

        from ..processing import compute_reference_stats
        from ..processing.stats import save_reference_stats

        train = datasets.load_dataset(str(real_dir / "dataset"), split="train")
        stats = compute_reference_stats(
            train,
            "image",
            statistic=cfg.get("adain_statistic", "per_image"),
            size=cfg["image_size"],
            dataset_name=f"{cfg['name']}-real-train",
        )
        save_reference_stats(stats, folder / "reference_stats.json")
        return {"reference_stats": "reference_stats.json", "mean": stats.mean, "std": stats.std}

    return Stage(
        "reference_stats",
        {
            "seed": cfg["seed"],
            "real": cfg["real_data"],
            "size": cfg["image_size"],
            "statistic": cfg.get("adain_statistic", "per_image"),
        },
        run,
        outputs=["reference_stats.json"],
    )


def evaluation_options(
    cfg: dict, models: list[tuple[str, Path]], real_dir: Path, out: Path, args: dict
) -> dict[str, object]:
    """``genssl evaluate`` options scoring ``(title, classifier folder)`` pairs side by side on the
    real test split into ``out``."""
    return {
        "model": [f"{title}={path}" for title, path in models],
        "dataset": str(real_dir / "dataset"),
        "split": "test",
        "output_dir": str(out),
        "overwrite": True,
        "seed": cfg["seed"],
        **args,
    }


def stage_evaluation(
    cfg: dict, root: Path, variants: list[str], real_dir: Path, log, fraction: float, seed: int, suffix: str
) -> Stage:
    """Test evaluation of one (fraction, seed) group of fine-tuned models (see :func:`finetune_runs`)."""
    ev = cfg.get("evaluation", {})

    def run(folder: Path) -> dict:
        out = folder / "results"
        models = [(variant_title(cfg, v), root / f"finetune_{v}{suffix}" / "run" / "best") for v in variants]
        options = evaluation_options(cfg, models, real_dir, out, ev.get("args", {}))
        _run_command(stage_command(cfg, folder, ["evaluate"], options), folder, log, env=cfg.get("subprocess_env"))
        from .results import build_results

        context = _run_context(cfg, root, variants, suffix)
        context["label fraction"] = f"{fraction:g} of the labelled training split (stratified, seed {seed})"
        zero_shot = root / "vlp_zero_shot" / "results" / "zero_shot_predictions.npz"
        summary = build_results(
            out,
            {v: variant_title(cfg, v) for v in variants},
            context,
            n_bootstrap=ev.get("args", {}).get("n_bootstrap", 1000),
            seed=cfg["seed"],
            extra_predictions={VLP_TITLE: zero_shot} if cfg.get("vlp") else None,
        )
        return {"results": "results", "rows": _jsonable(summary["rows"])}

    return Stage(
        f"evaluation{suffix}",
        {
            "evaluation": ev,
            "variants": variants,
            "seed": cfg["seed"],
            "fraction": fraction,
            "vlp": cfg.get("vlp"),
            "finetune": _without_seed_keys(cfg["finetune"]),
            "finetune_seed": seed,
            "pretrain": cfg["pretrain"],
            "generation": generation_keys(cfg["generation"]),
        },
        run,
        outputs=["results/results.md", "results/mauc_comparison.png"],
    )


def _sampling_text(gen: dict) -> str:
    """The steps (and sampler preset, when the config names one) of the generated images, in words."""
    if not gen.get("sampler"):
        return f"{gen.get('num_inference_steps')} DDIM steps"
    from ..generation.schedulers import GENERATION_PRESETS

    preset = GENERATION_PRESETS[gen["sampler"]]
    steps = gen.get("num_inference_steps") or preset["num_inference_steps"]
    return f"{steps} steps of {preset['scheduler']} (sampler preset {gen['sampler']})"


def _run_context(cfg: dict, root: Path, variants: list[str], suffix: str = "") -> dict[str, str]:
    """What the table's numbers come from, in one line each."""
    real = cfg["real_data"]
    sizes = real.get("sizes") or {}
    gen = cfg["generation"]
    pre = cfg["pretrain"].get("args", {})
    ft = cfg["finetune"].get("args", {})
    seconds = {}
    for name in ["generated_dataset"] + list(VARIANT_PRETRAIN.values()) + [f"finetune_{v}{suffix}" for v in variants]:
        marker = root / name / "stage.json"
        if marker.is_file():
            seconds[name] = read_json(marker).get("seconds")
    return {
        "real domain": (
            f"{real.get('source', 'phantom')} ({', '.join(f'{k} {v}' for k, v in sizes.items())})"
            if sizes
            else f"{real.get('source')} {real.get('path', '')}"
        ),
        "generated images": f"{gen['num_images']} at {gen.get('image_size', cfg['image_size'])} px, "
        + _sampling_text(gen)
        + f", guidance {gen.get('guidance_scale')}, "
        f"prompt set {cfg.get('prompts', {}).get('set', 'heuristic')}",
        "MAE pre-training": f"model {pre.get('model')}, {pre.get('num_train_epochs')} epochs, mask ratio "
        f"{pre.get('mask_ratio', 0.9)}",
        "fine-tuning": f"recipe {ft.get('recipe')}, {ft.get('num_train_epochs')} epochs, "
        "best epoch chosen on validation",
        "stage seconds": ", ".join(f"{k} {v:.0f}" for k, v in seconds.items() if v is not None),
    }


def stage_vlp_zero_shot(cfg: dict, root: Path, real_dir: Path, log) -> Stage:
    def run(folder: Path) -> dict:
        options = {
            "model": str(root / "vlp" / "model"),
            "dataset": str(real_dir / "dataset"),
            "split": "test",
            "output_dir": str(folder / "results"),
            "seed": cfg["seed"],
            "n_bootstrap": cfg.get("evaluation", {}).get("args", {}).get("n_bootstrap", 1000),
        }
        cmd = stage_command(cfg, folder, ["evaluate-vlp"], options)
        _run_command(cmd, folder, log, env=cfg.get("subprocess_env"))
        return {"results": "results"}

    return Stage(
        "vlp_zero_shot",
        {"seed": cfg["seed"], "vlp": cfg["vlp"]},
        run,
        outputs=["results/vlp_metrics.json", "results/zero_shot_predictions.npz"],
    )


def stage_sample_grid(cfg: dict, generated_dir: Path) -> Stage:
    def run(folder: Path) -> dict:
        import datasets
        import numpy as np

        from ..data.phantom import render_grid

        gen = datasets.load_dataset(str(generated_dir / "dataset"), split="train")
        by_prompt: dict[str, int] = {}
        for i, prompt in enumerate(gen["prompt"]):
            by_prompt.setdefault(prompt, i)
        picks = list(by_prompt.items())[:36]
        images = [np.asarray(gen[i]["image"]) for _, i in picks]
        render_grid(
            images,
            [p for p, _ in picks],
            folder / "generated_samples.png",
            ncols=6,
            title="Generated chest X-rays, one per prompt",
        )
        return {"grid": "generated_samples.png"}

    return Stage(
        "sample_grid", {"generated": str(generated_dir), "seed": cfg["seed"]}, run, outputs=["generated_samples.png"]
    )


def stage_hub(cfg: dict, root: Path, log) -> Stage:
    def run(folder: Path) -> dict:
        from ..hub import publish_all

        artifacts = {
            "prompt_set": root / "prompt_set" / "prompt_set",
            "generator": root / "generator" / "generator",
            "dataset": root / "generated_dataset" / "dataset",
            "encoder": root / "mae_genssl" / "model",
            "classifier": root / f"finetune_genssl{fraction_suffix(cfg, max(label_fractions(cfg)))}" / "run" / "best",
        }
        if cfg.get("vlp"):
            artifacts["dual_encoder"] = root / "vlp" / "model"
        artifacts = {k: v for k, v in artifacts.items() if v.exists()}
        # The leak guard checks against the real data this run used (add more with hub.real_data).
        real = [str(root / "real_data" / "dataset")] + list(cfg.get("hub", {}).get("real_data", []))
        if cfg["real_data"].get("source", "phantom") != "phantom":
            real.append(str(cfg["real_data"]["path"]))
        out = folder / "dry_run"
        shutil.rmtree(out, ignore_errors=True)
        publish_all(artifacts, cfg.get("hub", {}).get("namespace", "your-namespace"), dry_run=out, real_data=real)
        return {"dry_run": "dry_run", "artifacts": sorted(artifacts)}

    return Stage("hub", {"seed": cfg["seed"], "hub": cfg.get("hub", {}), "name": cfg["name"]}, run, outputs=["dry_run"])
