"""``import genssl_hf`` is light (no torch, no transformers, no training code), yet after it alone the
Auto classes resolve the genssl_hf classes, whichever of genssl_hf and transformers comes first.

Each check runs in a fresh interpreter: this process has long imported everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "genssl_hf.training", "genssl_hf.processing", "genssl_hf.models")


def run_fresh(code: str, tmp_path: Path) -> dict:
    """Run ``code`` in a new interpreter (cwd: the repository root, so this checkout's genssl_hf is
    imported); it stores its answers in the dict ``out``."""
    result = tmp_path / "fresh_result.json"
    script = tmp_path / "fresh_check.py"
    script.write_text(
        "import json, sys\nout = {}\n" + textwrap.dedent(code) + f"\njson.dump(out, open({str(result)!r}, 'w'))\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.mark.parametrize(
    "module", ["genssl_hf", "genssl_hf.utils", "genssl_hf.core", "genssl_hf.data", "genssl_hf.prompts"]
)
def test_import_is_light(module, tmp_path):
    out = run_fresh(
        f"""
        import {module}
        import genssl_hf
        out["file"] = genssl_hf.__file__
        out["heavy"] = [m for m in {HEAVY!r} if m in sys.modules]
        out["exports"] = [genssl_hf.__version__, sorted(genssl_hf.PRETRAINED)[0], callable(genssl_hf.pretrained_path)]
    """,
        tmp_path,
    )
    assert Path(out["file"]).resolve().is_relative_to(ROOT / "genssl_hf")
    assert out["heavy"] == []
    assert isinstance(out["exports"][0], str) and out["exports"][2] is True


def test_lazy_exports_still_import(tmp_path):
    out = run_fresh(
        """
        from genssl_hf.prompts import PromptSet
        out["prompts"] = PromptSet.__module__
        out["prompts_heavy"] = [m for m in ("torch", "transformers", "datasets") if m in sys.modules]
        from genssl_hf.data import CHEXPERT5, sample_phantom
        import genssl_hf.data as data
        out["data"] = [len(CHEXPERT5), sample_phantom.__module__, data.phantom.__name__, "read_cxr" in dir(data)]
        out["missing"] = hasattr(data, "no_such_name")
    """,
        tmp_path,
    )
    assert out["prompts"] == "genssl_hf.prompts.promptset" and out["prompts_heavy"] == []
    assert out["data"] == [5, "genssl_hf.data.phantom", "genssl_hf.data.phantom", True]
    assert out["missing"] is False


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny genssl_hf classifier folder (with its AdaIN processor) and a processor-only folder."""
    from genssl_hf.processing import AdaINImageProcessor
    from genssl_hf.training.classifier import build_classifier

    root = tmp_path_factory.mktemp("auto")
    clf, proc = root / "classifier", root / "processor"
    build_classifier("tiny", ["Atelectasis", "Edema"], multi_label=True, pooling="mean", image_size=32).save_pretrained(
        clf
    )
    for folder in (clf, proc):
        AdaINImageProcessor(size={"height": 32, "width": 32}, adain_mean=0.45, adain_std=0.22).save_pretrained(folder)
    return {"classifier": str(clf), "processor": str(proc)}


@pytest.mark.parametrize(
    "first",
    [
        "import genssl_hf",
        "import transformers; import genssl_hf",
        "from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification; import genssl_hf",
        # modeling_auto loads inside modeling_vit
        "import genssl_hf; from transformers import ViTForImageClassification",
        "import genssl_hf.processing",  # transformers' Auto modules load while genssl_hf.processing is half-imported
    ],
)
def test_auto_classes_resolve_after_import_genssl_hf(first, folders, tmp_path):
    out = run_fresh(
        f"""
        {first}
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, pipeline
        f = {folders!r}
        out["config"] = type(AutoConfig.from_pretrained(f["classifier"])).__name__
        out["processor"] = type(AutoImageProcessor.from_pretrained(f["processor"])).__name__
        out["classifier_processor"] = type(AutoImageProcessor.from_pretrained(f["classifier"])).__name__
        model = AutoModelForImageClassification.from_pretrained(f["classifier"])
        out["model"] = type(model).__module__ + "." + type(model).__name__
        pipe = pipeline("image-classification", model=f["classifier"])
        out["pipeline"] = [type(pipe.model).__name__, type(pipe.image_processor).__name__]
        import numpy as np
        from PIL import Image
        out["labels"] = sorted(p["label"] for p in pipe(Image.fromarray(np.zeros((40, 40), np.uint8))))
        out["training_imported"] = "genssl_hf.training" in sys.modules
    """,
        tmp_path,
    )
    assert out["config"] == "GenSSLViTConfig"
    assert out["processor"] == out["classifier_processor"] == "AdaINImageProcessor"
    assert out["model"] == "genssl_hf.models.vit_classifier.GenSSLViTForImageClassification"
    assert out["pipeline"] == ["GenSSLViTForImageClassification", "AdaINImageProcessor"]
    assert out["labels"] == ["Atelectasis", "Edema"]
    assert out["training_imported"] is False  # the registrations live below training


def test_a_failing_registration_warns_instead_of_breaking_transformers(tmp_path):
    out = run_fresh(
        """
        import warnings
        import genssl_hf._auto_register as auto

        def boom():
            raise RuntimeError("boom")

        auto._REGISTRATIONS["transformers.models.auto.configuration_auto"] = boom
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from transformers import AutoConfig
        out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        out["config"] = AutoConfig.__name__
    """,
        tmp_path,
    )
    assert out["config"] == "AutoConfig"
    assert any("configuration_auto" in w and "boom" in w for w in out["warnings"])
