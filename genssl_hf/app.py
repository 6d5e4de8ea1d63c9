"""genssl_hf in the browser: ``python -m genssl_hf.app [--run outputs/demo]`` (or ``make app``).

Four tabs over the artifacts of the package and of a pipeline run folder:

- **Generate**: chest X-rays from a prompt with any generator folder (the shipped ones, the run's,
  or a path), showing the seed of every image and the settings used;
- **Browse dataset**: a generated dataset (``load_dataset(folder, streaming=True)``) filtered by
  prompt or class, with its card;
- **Classify**: an uploaded X-ray (PNG / JPEG / DICOM) through a chosen classifier folder:
  per-finding probabilities and the last layer's CLS attention over the image;
- **Run results**: a pipeline run folder's results table, ROC curves, MAE reconstructions and
  sample grid.

It runs offline: with no run folder it still generates with the shipped phantom generator and
browses a small phantom dataset it renders itself. The same file works as a Hugging Face Space
``app.py`` (with ``genssl_hf`` in the Space's ``requirements.txt``). Every tab's function is also
a plain Python function here (``generate``, ``browse_dataset``, ``classify``, ``run_results``) and
an API endpoint of the app (``/generate``, ``/browse``, ``/classify``, ``/results``) for
``gradio_client``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls

__all__ = ["generate", "browse_dataset", "classify", "run_results", "find_artifacts", "build_app", "main"]

DEFAULT_RUN = Path("outputs/demo")
MAX_IMAGES = 16
OVERLAY_SIZE = 256
_LOCK = threading.Lock()  # one model call at a time: the machine's cores are shared anyway


# ------------------------------------------------------------------------------ discovery
def _packaged_generators() -> dict[str, Path]:
    from genssl_hf.generation import pretrained

    root = Path(pretrained.__file__).resolve().parent
    # the phantom generator first: it is the default, and the default prompts are phantom prompts
    folders = sorted(
        (p.parent for p in root.glob("*/model_index.json")), key=lambda f: (f.name != "phantom-ldm-64", f.name)
    )
    return {f"shipped: {f.name}": f for f in folders}


def _shown(path: Path) -> str:
    """A folder as the app's choices show it: relative to the working folder when it is below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def find_artifacts(run: str | os.PathLike | None) -> dict[str, dict[str, str]]:
    """``{"generators" | "classifiers" | "datasets": {label: folder}}`` of the package and of ``run``."""
    found: dict[str, dict[str, str]] = {
        "generators": {k: f"genssl_hf/{v.name}" for k, v in _packaged_generators().items()},
        "classifiers": {},
        "datasets": {},
    }
    if run is None or not Path(run).is_dir():
        return found
    run = Path(run)
    for p in sorted(run.glob("*/model_index.json")) + sorted(run.glob("*/*/model_index.json")):
        found["generators"][f"run: {p.parent.relative_to(run).as_posix()}"] = _shown(p.parent)
    for pattern in ("finetune*/run/best/config.json", "hub/dry_run/classifier/config.json"):
        for p in sorted(run.glob(pattern)):
            found["classifiers"][f"run: {p.parent.relative_to(run).as_posix()}"] = _shown(p.parent)
    for p in sorted(run.glob("*/README.md")) + sorted(run.glob("*/*/README.md")):
        if any(p.parent.glob("data/**/*.parquet")):
            found["datasets"][f"run: {p.parent.relative_to(run).as_posix()}"] = _shown(p.parent)
    return found


def _folder(value: str | os.PathLike | None, what: str, marker: str) -> Path:
    """The folder ``value`` names (a path or a shipped ``genssl_hf/NAME``) holding ``marker``; for a
    dataset also a run's ``generated_dataset`` whose one sub-folder holds the dataset."""
    from genssl_hf.utils import pretrained_path

    if value is None or not str(value).strip():
        raise ValueError(f"no {what} folder was chosen: type a folder path in the {what} box")
    path = pretrained_path(Path(str(value).strip()).expanduser())
    if not (path / marker).is_file() and what == "dataset":
        inner = [p.parent for p in sorted(path.glob(f"*/{marker}")) if any(p.parent.glob("data/**/*.parquet"))]
        path = inner[0] if len(inner) == 1 else path
    if not (path / marker).is_file():
        raise FileNotFoundError(f"{what} folder {value} has no {marker}")
    return path.resolve()


# ------------------------------------------------------------------------------ generate
@functools.lru_cache(maxsize=4)
def _pipeline(path: str):
    from genssl_hf.generation import CXRLatentDiffusionPipeline

    return CXRLatentDiffusionPipeline.from_pretrained(path)


def generate(
    generator: str, prompt: str, num_images: int = 4, seed: int = 0, steps: int = 20, guidance: float = 4.0
) -> tuple[list[tuple[Any, str]], dict[str, Any]]:
    """``num_images`` images for ``prompt`` with seeds ``seed, seed + 1, ...``; returns
    ``([(image, "seed N"), ...], settings)``. ``generator``: a ``CXRLatentDiffusionPipeline`` folder."""
    path = _folder(generator, "generator", "model_index.json")
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty")
    n, steps = int(num_images), int(steps)
    if not 1 <= n <= MAX_IMAGES:
        raise ValueError(f"number of images must be 1-{MAX_IMAGES}, got {num_images}")
    if not 1 <= steps <= 1000:
        raise ValueError(f"steps must be 1-1000, got {steps}")
    seeds = [int(seed) + i for i in range(n)]
    with _LOCK:
        pipe = _pipeline(str(path))
        t0 = time.perf_counter()
        out = pipe(
            prompt.strip(),
            num_images_per_prompt=n,
            num_inference_steps=steps,
            guidance_scale=float(guidance),
            seeds=seeds,
        )
        seconds = time.perf_counter() - t0
    settings = {
        "generator": str(generator).strip() if str(generator).startswith("genssl_hf/") else _shown(path),
        "prompt": prompt.strip(),
        "seeds": [int(s) for s in out.seeds],
        "num_inference_steps": steps,
        "guidance_scale": float(guidance),
        "scheduler": type(pipe.scheduler).__name__,
        "image_size": int(pipe.config.image_size),
        "seconds": round(seconds, 2),
        "reproduce": (
            f"CXRLatentDiffusionPipeline.from_pretrained({str(path)!r})({prompt.strip()!r}, "
            f"num_images_per_prompt={n}, num_inference_steps={steps}, guidance_scale={float(guidance)}, "
            f"seeds={seeds})"
        ),
    }
    return [(im, f"seed {s}") for im, s in zip(out.images, out.seeds)], settings


# ------------------------------------------------------------------------------ browse
def default_dataset(cache_dir: str | os.PathLike, num_images: int = 60, size: int = 64) -> Path:
    """A small generated dataset rendered by the phantom oracle (the embedded default; made once)."""
    from genssl_hf.generation import materialize

    out = Path(cache_dir) / f"phantom-heuristic-{num_images}-{size}px"
    if not (out / "README.md").is_file():
        materialize.generate_dataset(
            out, "phantom", prompts="heuristic", num_images=num_images, height=size, width=size, seed=0, progress=False
        )
    return out


def _card_text(folder: Path) -> str:
    """The card as Markdown: its text, with the YAML header summed up in one line."""
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(folder / "README.md", ignore_metadata_errors=True)
    meta = card.data.to_dict()
    shown = {k: meta.get(k) for k in ("pretty_name", "license", "size_categories", "tags") if meta.get(k)}
    facts = [f"**{k}**: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in shown.items()]
    return (" · ".join(facts) + "\n\n" if facts else "") + card.text.strip() + "\n"


def _filters_of(stream: Any) -> list[str]:
    prompts, classes = [], []
    for row in stream:
        for value, bucket in ((row.get("prompt"), prompts), (row.get("class_label_name"), classes)):
            if value is not None and value not in bucket:
                bucket.append(value)
    return ["all"] + [f"class: {c}" for c in sorted(classes)] + [f"prompt: {p}" for p in sorted(prompts)]


def browse_dataset(
    folder: str, selection: str = "all", limit: int = 24
) -> tuple[list[tuple[Any, str]], str, list[str]]:
    """Up to ``limit`` images of a generated dataset whose prompt or class matches ``selection``
    (``"all"``, ``"class: NAME"`` or ``"prompt: TEXT"``); returns ``(gallery, card markdown, filters)``."""
    import datasets

    path = _folder(folder, "dataset", "README.md")
    limit = int(limit)
    if not 1 <= limit <= 200:
        raise ValueError(f"limit must be 1-200, got {limit}")
    stream = datasets.load_dataset(str(path), split="train", streaming=True)
    class_names = None
    feature = stream.features.get("class_label") if stream.features else None
    if isinstance(feature, datasets.ClassLabel):
        class_names = feature.names

    def with_class(row: dict) -> dict:
        row["class_label_name"] = (
            class_names[row["class_label"]] if class_names and row.get("class_label") is not None else None
        )
        return row

    meta_columns = [c for c in ("prompt", "class_label") if c in (stream.column_names or [])]
    filters = _filters_of(with_class(dict(r)) for r in stream.select_columns(meta_columns)) if meta_columns else ["all"]
    selection = selection or "all"
    if selection not in filters:
        raise ValueError(f"{selection!r} is not a prompt or class of {path} (choose one of the listed filters)")
    kind, _, value = selection.partition(": ")
    gallery = []
    for row in stream:
        row = with_class(row)
        if kind == "class" and row["class_label_name"] != value or kind == "prompt" and row.get("prompt") != value:
            continue
        caption = f"{row.get('prompt') or row.get('class_label_name') or ''} (seed {row.get('seed')})"
        gallery.append((row["image"], caption))
        if len(gallery) >= limit:
            break
    return gallery, _card_text(path), filters


# ------------------------------------------------------------------------------ classify
@functools.lru_cache(maxsize=4)
def _classifier(path: str):
    import genssl_hf  # noqa: F401  (Auto classes learn genssl_hf_vit and the AdaINImageProcessor)
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(path).eval()
    return model, AutoImageProcessor.from_pretrained(path)


def _overlay(gray: np.ndarray, attention: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the grayscale image with the attention map (jet) on top, at OVERLAY_SIZE px."""
    import matplotlib
    from PIL import Image

    base = (
        np.asarray(Image.fromarray(gray).resize((OVERLAY_SIZE, OVERLAY_SIZE), Image.BILINEAR), dtype=np.float32) / 255
    )
    att = (
        np.asarray(
            Image.fromarray((255 * attention).astype(np.uint8)).resize((OVERLAY_SIZE, OVERLAY_SIZE), Image.BILINEAR),
            dtype=np.float32,
        )
        / 255
    )
    heat = matplotlib.colormaps["jet"](att)[..., :3]
    rgb = (1 - alpha) * np.repeat(base[..., None], 3, axis=-1) + alpha * heat
    return (255 * np.clip(rgb, 0, 1)).astype(np.uint8)


def classify(image_file: str, classifier: str) -> tuple[dict[str, float], np.ndarray, dict[str, Any]]:
    """Per-finding probabilities (sigmoid for multi-label models, softmax otherwise), the CLS
    attention overlay and details for the X-ray at ``image_file`` (PNG / JPEG / DICOM / ...)."""
    import torch

    from genssl_hf.data import read_cxr
    from genssl_hf.evaluation.attention import cls_attention_maps

    path = _folder(classifier, "classifier", "config.json")
    if not image_file or not Path(image_file).is_file():
        raise FileNotFoundError(f"no X-ray file at {image_file!r}")
    try:
        pixels = read_cxr(image_file)  # float32 (H, W) in [0, 1], DICOM windowed, bright = dense
    except Exception as e:  # any reader's refusal: the upload is not an image we can read
        raise ValueError(f"{Path(image_file).name} is not a readable X-ray (PNG, JPEG or DICOM): {e}") from None
    gray = np.round(255 * pixels).astype(np.uint8)
    with _LOCK:
        model, processor = _classifier(str(path))
        inputs = processor(gray, return_tensors="pt")
        with torch.no_grad():
            logits = model(inputs["pixel_values"]).logits.float()[0]
        attention = cls_attention_maps(model, inputs["pixel_values"])[0].numpy()
    multi_label = model.config.problem_type == "multi_label_classification"
    probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    size = int(inputs["pixel_values"].shape[-1])
    from PIL import Image

    shown = np.asarray(Image.fromarray(gray).resize((size, size), Image.BILINEAR))
    details = {
        "classifier": _shown(path),
        "model class": type(model).__name__,
        "processor": type(processor).__name__,
        "AdaIN": bool(getattr(processor, "do_adain", False)),
        "probabilities": "sigmoid per finding" if multi_label else "softmax over classes",
        "input": f"{pixels.shape[1]} x {pixels.shape[0]} -> {size} x {size}",
        "note": "research software, not for diagnosis",
    }
    return {n: float(p) for n, p in zip(names, probs)}, _overlay(shown, attention), details


# ------------------------------------------------------------------------------ run results
def run_results(run: str) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]], dict[str, Any]]:
    """A pipeline run folder's results table (markdown), ROC curves and other result plots,
    MAE reconstructions / sample grid, and its summary."""
    from genssl_hf.utils import read_json

    root = Path(str(run or "").strip()).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root} does not exist")
    tables = sorted(root.glob("evaluation*/results/results.md"))
    if not tables:
        raise FileNotFoundError(f"run folder {root} has no evaluation*/results/results.md (has the run finished?)")
    text = "\n\n".join(t.read_text(encoding="utf-8") for t in tables)
    plots = [
        (str(p), p.stem.replace("_", " "))
        for t in tables
        for pattern in ("roc*.png", "reliability*.png", "mauc_comparison.png")
        for p in sorted(t.parent.glob(pattern))
    ]
    figures = [
        (str(p), f"{p.parent.parent.name}: {p.stem}") for p in sorted(root.glob("mae*/model/reconstruction*.png"))
    ]
    figures += [(str(p), "generated samples") for p in sorted(root.glob("sample_grid/*.png"))]
    attention = sorted(root.glob("evaluation*/results/attention/*.png")) + sorted(
        root.glob("evaluation*/results/attention/*/*.png")
    )
    figures += [(str(p), f"attention: {p.parent.name}/{p.stem}") for p in attention[:8]]
    summary = read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    return text, plots, figures, summary


# ------------------------------------------------------------------------------ the app
def _ui(fn):
    """Errors reach the browser as a readable message, not a stack trace."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapped(*args):
        try:
            return fn(*args)
        except (ValueError, FileNotFoundError, OSError) as e:
            raise gr.Error(str(e), print_exception=False) from e  # the user's input: no traceback in the log

    return wrapped


def _choices(found: dict[str, str], what: str, hint: str) -> dict[str, Any]:
    """Dropdown arguments: (label, value) choices, the first as default, and what to do when the
    list is empty (type a folder: every box accepts one)."""
    choices = list(found.items())
    info = f"{len(choices)} found; or type a folder path" if choices else f"none found yet ({hint}): type a folder path"
    return {"choices": choices, "value": choices[0][1] if choices else None, "info": info, "allow_custom_value": True}


def _generate_tab(gr, generators: dict[str, str], prompts: list[str]) -> None:
    with gr.Row():
        with gr.Column():
            folder = gr.Dropdown(label="generator folder", **_choices(generators, "generator", "no generator"))
            prompt = gr.Dropdown(prompts, value=prompts[0], label="prompt", allow_custom_value=True)
            with gr.Row():
                n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="images")
                seed = gr.Number(0, precision=0, label="first seed")
            with gr.Row():
                steps = gr.Slider(1, 100, value=20, step=1, label="denoising steps")
                guidance = gr.Slider(1.0, 10.0, value=4.0, step=0.5, label="guidance scale")
            button = gr.Button("Generate", variant="primary")
        with gr.Column():
            gallery = gr.Gallery(label="generated images (caption: seed)", columns=4, height=420, format="png")
            settings = gr.JSON(label="settings")
    button.click(_ui(generate), [folder, prompt, n, seed, steps, guidance], [gallery, settings], api_name="generate")


def _browse_tab(gr, datasets_: dict[str, str], cache: Path) -> None:
    def browse_ui(folder, selection, limit):
        if not folder:
            folder = _shown(default_dataset(cache))
        gallery, card, filters = browse_dataset(folder, selection or "all", limit)
        return gallery, card, gr.update(choices=filters, value=selection or "all"), folder

    hint = "the run's generated_dataset appears when its stage is done; empty box: a phantom dataset made here"
    with gr.Row():
        folder = gr.Dropdown(label="generated dataset folder", **_choices(datasets_, "dataset", hint))
        selection = gr.Dropdown(["all"], value="all", label="prompt / class", allow_custom_value=True)
        limit = gr.Slider(1, 200, value=24, step=1, label="images")
    button = gr.Button("Show", variant="primary")
    gallery = gr.Gallery(label="dataset images (caption: prompt, seed)", columns=8, height=360, format="png")
    card = gr.Markdown(label="dataset card")
    button.click(_ui(browse_ui), [folder, selection, limit], [gallery, card, selection, folder], api_name="browse")


def _classify_tab(gr, classifiers: dict[str, str]) -> None:
    hint = "the run's classifiers appear when fine-tuning is done"
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="chest X-ray (PNG, JPEG or DICOM)", type="filepath")
            folder = gr.Dropdown(label="classifier folder", **_choices(classifiers, "classifier", hint))
            button = gr.Button("Classify", variant="primary")
        with gr.Column():
            label = gr.Label(label="probability per finding", num_top_classes=20)
            overlay = gr.Image(label="last-layer CLS attention", type="numpy", format="png")
            details = gr.JSON(label="classification details")
    button.click(_ui(classify), [upload, folder], [label, overlay, details], api_name="classify")


def _results_tab(gr, run: str | os.PathLike | None) -> None:
    folder = gr.Textbox(_shown(Path(run)) if run else "", label="pipeline run folder")
    button = gr.Button("Show", variant="primary")
    table = gr.Markdown(label="results table")
    with gr.Row():
        plots = gr.Gallery(label="ROC curves, reliability diagrams, comparisons", columns=2, height=420)
        figures = gr.Gallery(label="MAE reconstructions, generated samples, attention maps", columns=2, height=420)
    summary = gr.JSON(label="run summary")
    button.click(_ui(run_results), [folder], [table, plots, figures, summary], api_name="results")


def build_app(run: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None):
    """The gradio ``Blocks`` app over the package's artifacts and the run folder ``run``."""
    import gradio as gr

    from genssl_hf.prompts import PromptSet

    found = find_artifacts(run)
    cache = Path(cache_dir or Path(tempfile.gettempdir()) / "genssl_hf-app")
    prompts = [p.text for p in PromptSet.from_pretrained("heuristic")]
    with gr.Blocks(title="genssl_hf") as app:
        gr.Markdown(
            "# genssl_hf: generative self-supervised pre-training for chest X-rays\n"
            "Research software, not for diagnosis. Folders can be typed in any box that lists them."
            + (
                f"\n\nRun folder: `{_shown(Path(run))}`"
                if run and Path(run).is_dir()
                else "\n\nNo run folder (`make demo` writes `outputs/demo`): "
                "the shipped generator and a phantom dataset are used."
            )
        )
        with gr.Tab("Generate"):
            _generate_tab(gr, found["generators"], prompts)
        with gr.Tab("Browse dataset"):
            _browse_tab(gr, found["datasets"], cache)
        with gr.Tab("Classify"):
            _classify_tab(gr, found["classifiers"])
        with gr.Tab("Run results"):
            _results_tab(gr, run)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    from genssl_hf.typed_args import hidden_aliases

    parser = argparse.ArgumentParser(description="Browse genssl_hf artifacts in the browser (gradio).")
    parser.add_argument("--run", default=None, help=f"a pipeline run folder (default: {DEFAULT_RUN} when it exists)")
    parser.add_argument("--host", default=None, help="address to listen on (default: gradio's, 127.0.0.1 locally)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860)")
    parser.add_argument("--cache_dir", default=None, help="where the default phantom dataset is rendered")
    args = hidden_aliases(parser, {"--cache-dir": "--cache_dir"}).parse_args(argv)
    run = args.run if args.run is not None else (str(DEFAULT_RUN) if DEFAULT_RUN.is_dir() else None)
    if args.run is not None and not Path(args.run).is_dir():
        parser.error(f"--run {args.run}: no such folder")
    build_app(run, args.cache_dir).launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
