"""Issue 22, item 1: a model folder either loads exactly with plain transformers or is refused
with an error naming the package; never a silent partial load. The "plain transformers" side
runs in a subprocess in which importing genssl_hf is impossible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import genssl_hf  # noqa: F401  (registers the Auto classes in this process)
from genssl_hf.hub import publish as pub
from genssl_hf.processing import AdaINImageProcessor
from genssl_hf.models.vit_classifier import GenSSLViTForImageClassification
from genssl_hf.training.classifier import build_classifier

LABELS = ["Atelectasis", "Cardiomegaly", "Edema"]

# Runs first in every subprocess: genssl_hf cannot be imported there (as if it were not installed).
_NO_GENSSL = textwrap.dedent("""
    import sys, importlib.abc
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "genssl_hf" or name.startswith("genssl_hf."):
                raise ImportError("genssl_hf is not installed here (test)")
    sys.meta_path.insert(0, _Block())
""")


def run_plain(code: str, tmp_path: Path) -> dict:
    """Run ``code`` in a fresh interpreter without genssl_hf; it stores its answers in ``out``."""
    script = tmp_path / "plain_check.py"
    result = tmp_path / "plain_result.json"
    script.write_text(
        _NO_GENSSL
        + "out = {}\n"
        + textwrap.dedent(code)
        + textwrap.dedent(f"""
        assert not any(m == "genssl_hf" or m.startswith("genssl_hf.") for m in sys.modules)
        import json; open({str(result)!r}, "w").write(json.dumps(out))
    """)
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())


def _trained_like(pooling: str, folder: Path) -> tuple[Path, torch.Tensor, np.ndarray]:
    """A tiny classifier with non-trivial weights (so that a wrong head would show), its processor,
    and its logits on a fixed batch."""
    torch.manual_seed(0)
    model = build_classifier("tiny", LABELS, multi_label=True, pooling=pooling, image_size=32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    AdaINImageProcessor(size={"height": 32, "width": 32}, adain_mean=0.45, adain_std=0.22).save_pretrained(folder)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x).logits.numpy()
    np.save(folder.parent / f"{folder.name}-x.npy", x.numpy())
    return folder, x, logits


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    out = {}
    for pooling in ("cls", "mean"):
        native, x, logits = _trained_like(pooling, root / f"native-{pooling}")
        published = root / f"published-{pooling}"
        pub.publish("classifier", native, dry_run=published, allow_unchecked=True)
        out[pooling] = {"native": native, "published": published, "x": x, "logits": logits}
    return out


def test_native_folder_has_its_own_model_type_and_loads_exactly_through_auto(classifiers):
    from transformers import AutoModelForImageClassification

    for pooling, c in classifiers.items():
        cfg = json.loads((c["native"] / "config.json").read_text())
        assert cfg["model_type"] == "genssl_hf_vit" and cfg["pooling"] == pooling
        model, info = AutoModelForImageClassification.from_pretrained(c["native"], output_loading_info=True)
        assert isinstance(model, GenSSLViTForImageClassification)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
        with torch.no_grad():
            np.testing.assert_allclose(model.eval()(c["x"]).logits.numpy(), c["logits"], atol=1e-5)


def test_published_classifiers_are_stock_transformers_models(classifiers):
    assert json.loads((classifiers["cls"]["published"] / "config.json").read_text())["model_type"] == "vit"
    assert json.loads((classifiers["mean"]["published"] / "config.json").read_text())["model_type"] == "beit"
    text = (classifiers["mean"]["published"] / "README.md").read_text()
    assert "BeitForImageClassification" in text  # the provenance names what the folder holds


def test_plain_transformers_refuses_native_and_loads_published_exactly(classifiers, tmp_path):
    folders = {
        p: {
            "native": str(c["native"]),
            "published": str(c["published"]),
            "x": str(c["native"].parent / f"{c['native'].name}-x.npy"),
        }
        for p, c in classifiers.items()
    }
    out = run_plain(
        f"""
        import numpy as np, torch
        from transformers import AutoModelForImageClassification, AutoImageProcessor, AutoModel, pipeline
        from PIL import Image
        folders = {folders!r}
        for pooling, f in folders.items():
            errors = []
            for load in (lambda: AutoModelForImageClassification.from_pretrained(f["native"]),
                         lambda: AutoModel.from_pretrained(f["native"]),
                         lambda: pipeline("image-classification", model=f["native"])):
                try:
                    load()
                    errors.append(None)
                except Exception as e:
                    errors.append(f"{{type(e).__name__}}: {{e}}")
            model, info = AutoModelForImageClassification.from_pretrained(f["published"], output_loading_info=True)
            with torch.no_grad():
                logits = model.eval()(torch.from_numpy(np.load(f["x"]))).logits.numpy()
            try:
                proc = AutoImageProcessor.from_pretrained(f["published"])
                proc_error = None
            except Exception as e:
                proc, proc_error = None, f"{{type(e).__name__}}: {{e}}"
            try:
                pipeline("image-classification", model=f["published"])(Image.new("L", (32, 32)))
                pipe_error = None
            except Exception as e:
                pipe_error = f"{{type(e).__name__}}: {{e}}"
            out[pooling] = {{"errors": errors, "class": type(model).__name__, "logits": logits.tolist(),
                            "info": {{k: list(v) for k, v in info.items() if k != "error_msgs"}},
                            "proc_error": proc_error, "pipe_error": pipe_error}}
    """,
        tmp_path,
    )
    for pooling, c in classifiers.items():
        r = out[pooling]
        # the genssl_hf folder: refused, and the refusal names the package (its model_type)
        assert all(e is not None and "genssl_hf" in e for e in r["errors"]), r["errors"]
        # the published folder: a stock class, every weight used, the same logits
        assert r["class"] == {"cls": "ViTForImageClassification", "mean": "BeitForImageClassification"}[pooling]
        assert not any(r["info"][k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), r["info"]
        np.testing.assert_allclose(np.array(r["logits"]), c["logits"], atol=1e-4)
        # the AdaIN processor is refused loudly (never replaced by a stock processor without AdaIN),
        # and the file transformers points at names the package
        assert r["proc_error"] is not None and r["pipe_error"] is not None
        assert "preprocessor_config.json" in r["proc_error"]
        assert (
            "pip install genssl_hf" in json.loads((c["published"] / "preprocessor_config.json").read_text())["requires"]
        )


def test_the_issue_case_a_mean_pooled_head_never_loads_as_a_cls_head(classifiers, tmp_path):
    """What the issue measured: AutoModelForImageClassification on a mean-pooled folder gave a
    stock ViT that dropped fc_norm and invented vit.layernorm. Without the package the folder's
    config is now refused (naming genssl_hf_vit); with it, the Auto classes load it exactly (above)."""
    out = run_plain(
        f"""
        from transformers import AutoConfig
        try:
            AutoConfig.from_pretrained({str(classifiers["mean"]["native"])!r})
            out["error"] = None
        except ValueError as e:
            out["error"] = str(e)
    """,
        tmp_path,
    )
    assert out["error"] and "model type `genssl_hf_vit`" in out["error"]


def test_the_adain_processor_without_the_package_fails_loudly_and_points_at_the_package(classifiers, tmp_path):
    """Item 1, the processor: what a user with transformers alone sees. transformers 5 resolves
    ``image_processor_type`` only among its own and registered classes, and its error echoes
    nothing from the file; the one hook a folder has (``auto_map``) is remote code. So the behaviour
    settled on (README, "The first ten minutes"): a ValueError naming the folder and
    ``image_processor_type`` / ``preprocessor_config.json`` (AutoProcessor: "Unrecognized processing
    class in <folder>"), never a stock processor without AdaIN, and that file names the package."""
    from _publish_artifacts import make_encoder

    from genssl_hf.hub.shipped import shipped_folder

    encoder = tmp_path / "enc-pub"
    pub.publish("encoder", make_encoder(tmp_path / "enc"), dry_run=encoder, allow_unchecked=True)
    folders = [classifiers["cls"]["published"], classifiers["mean"]["published"], encoder, encoder / "vit"]
    shipped_dir = shipped_folder("nih-genssl-mae-64")  # the shipped encoder, where this checkout has it
    if shipped_dir.is_dir():
        folders += [shipped_dir, shipped_dir / "vit"]
    out = run_plain(
        f"""
        from transformers import AutoImageProcessor, AutoProcessor
        for f in {[str(f) for f in folders]!r}:
            out[f] = {{}}
            for name, load in (("image", AutoImageProcessor.from_pretrained), ("any", AutoProcessor.from_pretrained)):
                try:
                    out[f][name] = "loaded " + type(load(f)).__name__
                except Exception as e:
                    out[f][name] = f"{{type(e).__name__}}: {{e}}"
    """,
        tmp_path,
    )
    from transformers import AutoImageProcessor

    for f in folders:
        assert out[str(f)]["image"].startswith(f"ValueError: Unrecognized image processor in {f}"), out[str(f)]["image"]
        assert "image_processor_type" in out[str(f)]["image"]
        assert out[str(f)]["any"].startswith(f"ValueError: Unrecognized processing class in {f}"), out[str(f)]["any"]
        saved = json.loads((f / "preprocessor_config.json").read_text())
        assert saved["image_processor_type"] == "AdaINImageProcessor"
        assert "pip install genssl_hf" in saved["requires"] and "auto_map" not in saved  # no remote code
        assert isinstance(AutoImageProcessor.from_pretrained(f), AdaINImageProcessor)  # with the package: exact
