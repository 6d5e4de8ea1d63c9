"""Publishing never leaves the artifact folder, carries no credentials, and is never half done:

* a symlink inside the folder to a file outside it is refused (one to a file inside is fine);
* a token, a ``user:password@`` URL or a private key in any text file, a safetensors header or the
  card is refused, the message naming file, line and kind with the secret masked;
* recorded commands (``build_prompts``' argv, the pipeline's ``command.txt``) are scrubbed;
* an upload that fails mid-way (mocked ``HfApi``) leaves no staging behind and nothing committed,
  and the retry completes with the same files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import pytest

from genssl_hf.core.secrets import REDACTED, redact_argv
from genssl_hf.hub import publish as pub
from genssl_hf.hub.outgoing import OutgoingFileError

from _publish_artifacts import make_dataset, make_prompt_set

TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345"


@pytest.fixture
def prompt_set(tmp_path):
    return make_prompt_set(tmp_path / "prompt_set")


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    src = make_dataset(tmp_path / "dataset", n=4)
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps({"note": "a file of another user"}))
    (src / "extra.json").symlink_to(secret)
    with pytest.raises(OutgoingFileError, match=rf"extra.json: a symlink to {secret}, outside the artifact folder"):
        pub.publish("dataset", src, "me/ds", dry_run=tmp_path / "out", allow_unchecked=True)
    assert not (tmp_path / "out").exists()
    (src / "extra.json").unlink()
    (src / "extra.json").symlink_to(src / "README.md")  # inside: resolved and allowed
    pub.publish("dataset", src, "me/ds", dry_run=tmp_path / "out", allow_unchecked=True)
    assert (tmp_path / "out" / "extra.json").is_file()


@pytest.mark.parametrize(
    "name, text, kind",
    [
        ("notes.md", f"token: {TOKEN}\n", "Hugging Face token"),
        ("endpoint.json", json.dumps({"url": "https://alice:s3cret@llm.example.org/v1"}), "URL with user:password"),
        (
            "key.txt",
            "x\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n",
            "private key",
        ),
    ],
)
def test_credentials_in_text_files_are_refused(tmp_path, name, text, kind):
    src = make_dataset(tmp_path / "dataset", n=4)
    (src / name).write_text(text)
    with pytest.raises(OutgoingFileError, match=rf"{name}: line \d+: {kind}") as err:
        pub.publish("dataset", src, "me/ds", dry_run=tmp_path / "out", allow_unchecked=True)
    assert "s3cret" not in str(err.value) and TOKEN not in str(err.value) and "b3Blbn" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_token_in_a_safetensors_header_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from _publish_artifacts import make_encoder

    src = make_encoder(tmp_path / "encoder")
    weights = src / "model.safetensors"
    # the header is JSON after an 8-byte length: scanned although the file is binary
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pt", "hub_token": TOKEN})
    with pytest.raises(OutgoingFileError, match=r"model.safetensors: line 1: Hugging Face token"):
        pub.publish("encoder", src, "me/enc", dry_run=tmp_path / "out", allow_unchecked=True)


def test_recorded_commands_are_scrubbed(tmp_path):
    argv = ["--endpoint", "https://bob:pw@api.example.org/v1", "--api_key", "abc123", "--max_new_tokens", "8"]
    assert redact_argv(argv) == [
        "--endpoint",
        f"https://{REDACTED}@api.example.org/v1",
        "--api_key",
        REDACTED,
        "--max_new_tokens",
        "8",
    ]
    from genssl_hf.pipeline.launch import _run_command

    _run_command([sys.executable, "-c", "pass", "--hub_token", TOKEN], tmp_path, lambda s: None)
    recorded = (tmp_path / "command.txt").read_text()
    assert TOKEN not in recorded and f"--hub_token {REDACTED}" in recorded


def test_interrupted_upload_publishes_nothing_and_the_retry_completes(prompt_set):
    committed: list[list[str]] = []
    staged_dirs: list[Path] = []

    def flaky_upload(**kw):
        folder = Path(kw["folder_path"])
        staged_dirs.append(folder)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        if len(staged_dirs) == 1:
            raise ConnectionError("connection reset while uploading prompts.json")
        committed.append(files)  # a Hub commit is all files or none
        return "commit-1"

    with mock.patch.object(pub, "HfApi") as api_cls:
        api_cls.return_value.upload_folder.side_effect = flaky_upload
        with pytest.raises(ConnectionError):
            pub.publish("prompt_set", prompt_set, "me/prompts", allow_unchecked=True)
        assert committed == [] and not staged_dirs[0].exists()  # no staging left behind
        res = pub.publish("prompt_set", prompt_set, "me/prompts", allow_unchecked=True)
    assert committed == [["README.md", "data/prompts.parquet", "prompts.json"]] and res.commit == "commit-1"


def test_publish_all_interrupted_names_what_is_missing_and_the_retry_completes(tmp_path):
    arts = {"prompt_set": make_prompt_set(tmp_path / "p"), "dataset": make_dataset(tmp_path / "d", n=4)}
    done: dict[str, int] = {}

    def upload(**kw):
        if kw["repo_id"] == "me/genssl-synthetic-cxr" and not done.get("failed"):
            done["failed"] = 1
            raise ConnectionError("connection reset")
        done[kw["repo_id"]] = done.get(kw["repo_id"], 0) + 1
        return "c"

    with mock.patch.object(pub, "HfApi") as api_cls:
        api_cls.return_value.upload_folder.side_effect = upload
        with pytest.raises(pub.PublishInterruptedError) as err:
            pub.publish_all(arts, "me", allow_unchecked=True)
        assert err.value.missing == {"dataset": "me/genssl-synthetic-cxr"} and list(err.value.uploaded) == [
            "prompt_set"
        ]
        assert "run the same command again" in str(err.value)
        results = pub.publish_all(arts, "me", allow_unchecked=True)
    assert set(results) == set(arts) and all(r.commit == "c" for r in results.values())
    assert done["me/genssl-synthetic-cxr"] == 1
