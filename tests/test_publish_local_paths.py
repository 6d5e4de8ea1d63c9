"""Nothing local is published: paths inside the run become relative, any other absolute path, the
user name or the host name makes the publish step refuse before anything is written."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _publish_artifacts import make_dataset, make_encoder, make_prompt_set  # noqa: E402

from genssl_hf.hub import publish as pub  # noqa: E402
from genssl_hf.hub.local_paths import LocalPathError, find_local_paths, relative_to_run  # noqa: E402


def _run_with_encoder(tmp_path: Path) -> Path:
    run = tmp_path / "outputs" / "demo"
    enc = make_encoder(run / "mae")
    config = {
        "output_dir": str(enc.absolute()),
        "train_dir": str((run / "generated_dataset").absolute()),
        "command": f"{Path.cwd() / 'scripts' / 'pretrain_mae.py'} --output_dir {enc.absolute()}",
    }
    (enc / "run_config.json").write_text(json.dumps(config, indent=2))
    (enc / "command.log").write_text(f"saved {enc.absolute() / 'model.safetensors'}\n")
    return run


def _published_text(folder: Path) -> dict[str, str]:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".md", ".log", ".txt", ".yaml", ".py"):
            out[p.relative_to(folder).as_posix()] = p.read_text()
    return out


def test_paths_inside_the_run_are_published_relative(tmp_path):
    run = _run_with_encoder(tmp_path)
    make_prompt_set(run / "prompt_set")
    make_dataset(run / "generated_dataset")
    pub.publish_all(run, dry_run=tmp_path / "hub", allow_unchecked=True)
    config = json.loads((tmp_path / "hub" / "encoder" / "run_config.json").read_text())
    assert config["output_dir"] == "mae" and config["train_dir"] == "generated_dataset"
    assert config["command"] == "scripts/pretrain_mae.py --output_dir mae"
    for kind in ("encoder", "prompt_set", "dataset"):
        for name, text in _published_text(tmp_path / "hub" / kind).items():
            assert str(tmp_path) not in text, f"{kind}/{name}"
            assert find_local_paths(text) == [], f"{kind}/{name}: {find_local_paths(text)}"
    # the source folder is untouched (the rewrite happens in the outgoing copy only)
    assert json.loads((run / "mae" / "run_config.json").read_text())["output_dir"].startswith("/")


def test_publish_refuses_an_absolute_path_outside_the_run(tmp_path):
    run = _run_with_encoder(tmp_path)
    (run / "mae" / "notes.json").write_text(json.dumps({"real_images": "/mnt/hospital/cxr/0001.png"}))
    with pytest.raises(LocalPathError, match=r"notes\.json: '/mnt/hospital/cxr/0001\.png'"):
        pub.publish("encoder", run / "mae", dry_run=tmp_path / "out", allow_unchecked=True)
    assert not (tmp_path / "out").exists()
    # the command line says the same, without a traceback
    code = pub.main(["--kind", "encoder", "--folder", str(run / "mae"), "--dry-run", str(tmp_path / "o2")])
    assert code == 1 and not (tmp_path / "o2").exists()


def test_publish_refuses_the_host_name(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "radiology-ws17.example.org")
    run = _run_with_encoder(tmp_path)
    (run / "mae" / "command.log").write_text("step 10 on radiology-ws17: loss 0.5\n")
    with pytest.raises(LocalPathError, match="command.log: 'radiology-ws17'"):
        pub.publish("encoder", run / "mae", dry_run=tmp_path / "out", allow_unchecked=True)


def test_relative_to_run_forms():
    run_dir = Path("/home/alice/outputs/demo")
    home = str(Path.home())
    text = f"/home/alice/outputs/demo/mae/best and /home/alice/outputs/demo and {home}/cache/x"
    out = relative_to_run(text, run_dir)
    assert out.startswith("mae/best and . and ~/cache/x")
    assert find_local_paths("see https://huggingface.co/datasets/x and data/train/0.png") == []
    assert find_local_paths("C:\\Users\\alice\\run and /Users/alice/x") == ["/Users/alice/x", "C:\\Users\\alice\\run"]
