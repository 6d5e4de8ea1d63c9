"""The README's loads are quiet (no report of unexpected or missing keys) and run summaries keep
their per-step arrays in a file of their own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _publish_artifacts import make_encoder  # noqa: E402

from genssl_hf.utils import write_train_summary  # noqa: E402


def _load_report(capfd, load) -> str:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_warning()  # what a user sees by default
    capfd.readouterr()
    load()
    out = capfd.readouterr()
    return out.out + out.err


def test_the_readme_encoder_loads_are_quiet(tmp_path, capfd):
    from transformers import AutoModel, ViTMAEForPreTraining

    from genssl_hf.hub.publish import publish

    enc = make_encoder(tmp_path / "mae_genssl" / "model")
    publish("encoder", enc, dry_run=tmp_path / "published", allow_unchecked=True)  # adds vit/
    vit = tmp_path / "published" / "vit"
    quiet = {
        "ViTMAEForPreTraining(run folder).vit": lambda: ViTMAEForPreTraining.from_pretrained(enc).vit,
        "AutoModel(vit/, add_pooling_layer=False)": lambda: AutoModel.from_pretrained(vit, add_pooling_layer=False),
    }
    for name, load in quiet.items():
        report = _load_report(capfd, load)
        for word in ("UNEXPECTED", "MISSING", "newly initialized", "not used"):
            assert word not in report, f"{name}: {report[-800:]}"
    # the same through transformers' own account of the load: nothing missing, nothing left over
    for info in (
        ViTMAEForPreTraining.from_pretrained(enc, output_loading_info=True)[1],
        AutoModel.from_pretrained(vit, add_pooling_layer=False, output_loading_info=True)[1],
    ):
        assert not info["missing_keys"] and not info["unexpected_keys"], info
    # what the README used to say is loud (the reason for the change); the printed report may be
    # shown once per process only, so ask for the load's account
    assert AutoModel.from_pretrained(enc, output_loading_info=True)[1]["unexpected_keys"]
    assert AutoModel.from_pretrained(vit, output_loading_info=True)[1]["missing_keys"]


def test_train_summary_keeps_per_step_arrays_apart(tmp_path):
    summary = {"global_step": 40, "final_loss": 0.5, "step_end_seconds": [0.1 * i for i in range(40)], "seeds": [0, 1]}
    write_train_summary(tmp_path, summary)
    short = json.loads((tmp_path / "train_summary.json").read_text())
    steps = json.loads((tmp_path / "train_steps.json").read_text())
    assert short == {"global_step": 40, "final_loss": 0.5, "seeds": [0, 1], "per_step_file": "train_steps.json"}
    assert steps == {"step_end_seconds": summary["step_end_seconds"]}
    (tmp_path / "short").mkdir()
    write_train_summary(tmp_path / "short", {"global_step": 2})
    assert not (tmp_path / "short" / "train_steps.json").exists()
