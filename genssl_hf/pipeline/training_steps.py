"""The training stages of a pipeline run: the generator (trained or copied), MAE pre-training,
fine-tuning, the SSL variants' pre-training and vision-language pre-training. Each builder returns a
:class:`~.stages.Stage`, like the other stages in :mod:`.steps`."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..utils import read_json, write_json
from .config import _without_seed_keys
from .launch import _jsonable, _run_command, stage_command
from .ssl_variants import ssl_pretrain_options, ssl_stage_summary
from .stages import Stage


def stage_generator(cfg: dict, log=print) -> Stage:
    """The generator pipeline folder: the shipped phantom generator (copied, so the run folder is
    self-contained and publishable) or a path given in the config."""

    def run(folder: Path) -> dict:
        spec = cfg.get("generator", {"source": "shipped"})
        if spec.get("source") == "phantom-oracle":
            # No diffusion model: phantoms rendered from the parsed prompt (a dry-run generator).
            write_json(folder / "generator.json", {"generator": "phantom"})
            return {"generator": "phantom", "source": "phantom-oracle"}
        if spec.get("source") == "train":
            src = _train_generator(cfg, spec, folder, log)
        elif spec.get("source", "shipped") == "shipped":
            from ..generation.pretrained import PHANTOM_GENERATOR_DIR

            src = PHANTOM_GENERATOR_DIR
        else:
            src = Path(spec["path"])
        if not (src / "model_index.json").is_file():
            raise FileNotFoundError(f"generator folder {src} has no model_index.json (not a diffusers pipeline folder)")
        target = folder / "generator"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(src, target, symlinks=False)
        return {"generator": "generator", "source": str(src)}

    oracle = cfg.get("generator", {}).get("source") == "phantom-oracle"
    return Stage(
        "generator",
        {"generator": cfg.get("generator", {"source": "shipped"})},
        run,
        outputs=["generator.json" if oracle else "generator/model_index.json"],
    )


def generator_training_data(spec: dict, folder: Path) -> Path:
    """Images with a text column for generator training, exported as parquet: the train split of a
    dataset-registry scheme (``generator.dataset``, e.g. ``nih-subset``, at ``generator.path``) with
    its findings written as a short report ("Effusion. Infiltration." or "No finding."), or any
    dataset folder that already has ``image`` and ``text``."""
    import datasets

    from ..data.adapters import embed_images
    from ..data.export import export_parquet
    from ..data.registry import DATASET_SCHEMES, open_labelled_dataset

    target = folder / "train_data"
    scheme = spec.get("dataset")
    if scheme in DATASET_SCHEMES:
        ds = open_labelled_dataset(f"{scheme}:{spec['path']}")["train"]
        ds = embed_images(_with_findings_text(ds).select_columns(["image", "text"]))
    else:
        ds = datasets.load_dataset(spec["path"], split="train").select_columns(["image", "text"])
    export_parquet(ds, target, overwrite=True, card_body="# Generator training data (local only, never published)")
    return target


def _with_findings_text(ds):
    """``ds`` with a ``text`` column naming each row's findings (multi-label ``labels``, or a class
    ``label``); a row without findings (or of a "No finding" class) reads "No finding."."""
    multi = "labels" in ds.column_names
    names = ds.features["labels"].feature.names if multi else ds.features["label"].names

    def text(row):
        found = [names[i].replace("_", " ") for i in (row["labels"] if multi else [row["label"]])]
        found = [n for n in found if n.lower() != "no finding"]
        return {"text": " ".join(f"{n}." for n in found) or "No finding."}

    return ds.map(text)


def _train_generator(cfg: dict, spec: dict, folder: Path, log) -> Path:
    """Fine-tune the shipped phantom autoencoder and LDM on real images with text (a small CPU
    generator); returns the trained pipeline folder."""
    from ..generation.pretrained import PHANTOM_GENERATOR_DIR

    data = generator_training_data(spec, folder)
    shared = {"dataset": str(data), "resolution": spec.get("resolution", cfg["image_size"]), "seed": cfg["seed"]}
    ae_options = {
        **shared,
        "model": str(PHANTOM_GENERATOR_DIR / "vae"),
        "output_dir": str(folder / "ae"),
        "overwrite_output_dir": True,
        **spec.get("autoencoder_args", {}),
    }
    ae_cmd = stage_command(cfg, folder, ["train-generator", "autoencoder"], ae_options, name="autoencoder")
    _run_command(ae_cmd, folder, log, name="autoencoder")
    ldm_options = {
        **shared,
        "text_column": "text",
        "autoencoder": str(folder / "ae"),
        "model": str(PHANTOM_GENERATOR_DIR),
        "output_dir": str(folder / "ldm"),
        "overwrite_output_dir": True,
        **spec.get("ldm_args", {}),
    }
    ldm_cmd = stage_command(cfg, folder, ["train-generator", "ldm"], ldm_options, name="ldm")
    _run_command(ldm_cmd, folder, log, name="ldm")
    return folder / "ldm" / "pipeline"


def stage_pretrain(cfg: dict, name: str, dataset_dir: Path, adain: str, stats_path: Path, log) -> Stage:
    pre = cfg["pretrain"]

    def run(folder: Path) -> dict:
        out = folder / "model"
        options = {
            "method": "mae",
            "dataset": str(dataset_dir / "dataset"),
            "output_dir": str(out),
            "seed": cfg["seed"],
            "adain": adain,
            "reference_stats": str(stats_path),
            "image_size": cfg["image_size"],
            "overwrite_output_dir": True,
            "figure": "off" if dataset_dir.name == "real_unlabelled" else "on",  # never draw real images
            **pre.get("args", {}),
        }
        cmd = stage_command(cfg, folder, ["pretrain"], options)
        _run_command(cmd, folder, log, env=cfg.get("subprocess_env"))
        return {
            "model": "model",
            "run_config": _jsonable(read_json(out / "run_config.json"))
            if (out / "run_config.json").is_file()
            else None,
        }

    return Stage(
        name,
        {"pretrain": pre, "adain": adain, "data": str(dataset_dir), "seed": cfg["seed"], "size": cfg["image_size"]},
        run,
        outputs=["model/config.json", "model/preprocessor_config.json"],
    )


def stage_finetune(
    cfg: dict, variant: str, init: str, real_dir: Path, log, fraction: float, seed: int, suffix: str
) -> Stage:
    """One fine-tuning run; ``fraction``, ``seed`` and ``suffix`` come from :func:`finetune_runs`."""
    ft = cfg["finetune"]

    def run(folder: Path) -> dict:
        out = folder / "run"
        args = dict(ft.get("args", {}))
        args["label_fraction"] = fraction
        options = {
            "model": init,
            "dataset": str(real_dir / "dataset"),
            "output_dir": str(out),
            "seed": seed,
            "image_size": cfg["image_size"],
            "overwrite_output_dir": True,
            **args,
        }
        cmd = stage_command(cfg, folder, ["finetune"], options)
        _run_command(cmd, folder, log, env=cfg.get("subprocess_env"))
        metrics = read_json(out / "metrics.json")
        return {"best": "run/best", "metrics": _jsonable(metrics)}

    return Stage(
        f"finetune_{variant}{suffix}",
        {
            "finetune": _without_seed_keys(ft),
            "init": init,
            "seed": seed,
            "size": cfg["image_size"],
            "fraction": fraction,
            # the validation-chosen operating point saved with the model (best/thresholds.json)
            "threshold_rule": ft.get("args", {}).get("threshold_rule", "youden"),
        },
        run,
        outputs=["run/best/config.json", "run/best/thresholds.json", "run/metrics.json"],
    )


def stage_ssl_pretrain(cfg: dict, name: str, stats_path: Path, root: Path, log) -> Stage:
    """Contrastive / Siamese / pretext pre-training of one ``ssl_variants`` entry."""

    def run(folder: Path) -> dict:
        out = folder / "model"
        cmd = stage_command(cfg, folder, ["pretrain"], ssl_pretrain_options(cfg, name, root, stats_path, out))
        _run_command(cmd, folder, log, env=cfg.get("subprocess_env"))
        return ssl_stage_summary(out)

    return Stage(
        f"ssl_{name}",
        {
            "ssl_pretrain": cfg.get("ssl_pretrain", {}),
            "variant": cfg["ssl_variants"][name],
            "seed": cfg["seed"],
            "size": cfg["image_size"],
        },
        run,
        outputs=["model/config.json", "model/preprocessor_config.json"],
    )


def stage_vlp(cfg: dict, stats_path: Path, log) -> Stage:
    """The dual encoder on ``vlp.pairs`` (default: as many real-domain phantoms, with their reports,
    as ``vlp.num_pairs``; never the labelled split)."""
    vlp = cfg["vlp"]

    def run(folder: Path) -> dict:
        out = folder / "model"
        pairs = vlp.get("pairs") or f"phantom:{vlp.get('num_pairs', 2000)}"
        args = dict(vlp.get("args", {}))
        # ``genssl pretrain --method convirt|clip`` is the VLP trainer with that loss
        method = args.pop("loss", None) or _vlp_default_loss()
        options = {
            "method": method,
            "pairs": pairs,
            "phantom_config": cfg["real_data"].get("phantom", {}),
            "image_size": cfg["image_size"],
            "reference_stats": str(stats_path),
            "seed": cfg["seed"],
            "output_dir": str(out),
            "overwrite_output_dir": True,
            **args,
        }
        cmd = stage_command(cfg, folder, ["pretrain"], options)
        _run_command(cmd, folder, log, env=cfg.get("subprocess_env"))
        return {"model": "model"}

    return Stage(
        "vlp",
        {"vlp": vlp, "seed": cfg["seed"], "size": cfg["image_size"], "real": cfg["real_data"]},
        run,
        outputs=["model/config.json", "model/vlp_config.json"],
    )


def _vlp_default_loss() -> str:
    from ..training.vlp import build_parser

    return build_parser().get_default("loss")
