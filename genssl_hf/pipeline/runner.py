"""The end-to-end GEN-SSL pipeline runner behind ``scripts/run_pipeline.py``."""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..utils import read_json, write_json
from .stages import Stage, run_stage

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
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return config


def _stage_real_data(cfg: dict):
    from ..data.export import export_parquet
    from ..data.phantom import PhantomConfig, phantom_splits

    def run(folder: Path) -> dict:
        real = cfg["real_data"]
        phantom_cfg = PhantomConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in real.get("phantom", {}).items()})
        splits = phantom_splits(real["sizes"], size=cfg["image_size"], seed=cfg["seed"] + 1000, config=phantom_cfg,
                                cache_dir=str(folder / ".cache"))
        export_parquet(splits, folder / "dataset", overwrite=True,
                       card_body="# Phantom chest X-rays (labelled 'real' domain of the demo)\n\n"
                                 "Procedurally rendered by `genssl_hf.data.phantom`; no real patient data.")
        return {"dataset": "dataset", "sizes": {k: len(v) for k, v in splits.items()}}

    return Stage("real_data", {"real_data": cfg["real_data"], "image_size": cfg["image_size"], "seed": cfg["seed"]},
                 run, outputs=["dataset/README.md"])


def _stage_sample_grid(cfg: dict, real_dir: Path):
    def run(folder: Path) -> dict:
        import datasets
        import numpy as np

        from ..data.phantom import render_grid

        ds = datasets.load_dataset(str(real_dir / "dataset"), split="train", cache_dir=str(folder / ".cache"))
        names = ds.features["labels"].feature.names
        n = min(12, len(ds))
        rows = ds.select(range(n))
        images = [np.asarray(r["image"]) for r in rows]
        captions = [", ".join(names[i] for i in r["labels"]) or "No finding" for r in rows]
        render_grid(images, captions, folder / "real_samples.png", ncols=6, title="Phantom chest X-rays (load_dataset)")
        return {"grid": "real_samples.png"}

    return Stage("sample_grid", {"real": str(real_dir), "seed": cfg["seed"]}, run, outputs=["real_samples.png"])


def run_pipeline(config: dict, output_dir: str | Path | None = None, log=print) -> dict[str, Any]:
    """Run every stage of ``config`` in order under ``output_dir``; returns the stage summaries."""
    config = copy.deepcopy(config)
    root = Path(output_dir or config.get("output_dir") or f"outputs/{config['name']}")
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "pipeline_config.json", config)
    start = time.perf_counter()
    summaries: dict[str, Any] = {}
    summaries["real_data"] = run_stage(root, _stage_real_data(config), log)
    summaries["sample_grid"] = run_stage(root, _stage_sample_grid(config, root / "real_data"), log)
    summaries["seconds"] = round(time.perf_counter() - start, 1)
    write_json(root / "summary.json", summaries)
    return {"root": str(root), **summaries}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo", help="smoke | demo | paper, or a path to a JSON config")
    parser.add_argument("--output-dir", default=None, help="where stage folders go (default: outputs/<preset>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set pretrain.epochs=5 (repeatable)")
    args = parser.parse_args(argv)
    config = load_preset(args.preset, args.overrides)
    result = run_pipeline(config, args.output_dir)
    root = Path(result["root"])
    print(f"\nPhantom dataset (reloads with datasets.load_dataset): {root / 'real_data' / 'dataset'}")
    print(f"Sample grid: {root / 'sample_grid' / 'real_samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
