"""The per-tree cache of trained test fixtures (tests/conftest.py): a second request reuses the entry
without building; another recipe builds again and removes the old entry; a build that fails leaves no
entry and the next request builds; a package change (another tree hash) is a new key."""

import json

import pytest
from conftest import cached_build, package_tree_hash


def _builder(calls):
    def build(out):
        calls.append(out)
        out.mkdir(parents=True)
        (out / "weights.txt").write_text(f"build {len(calls)}")
        return {"final_loss": 0.5, "steps": len(calls)}

    return build


def test_reused_at_the_same_key_rebuilt_and_pruned_at_another(tmp_path):
    calls = []
    folder, value = cached_build(tmp_path, "m", ["--max_steps", "3"], _builder(calls))
    again, value_again = cached_build(tmp_path, "m", ["--max_steps", "3"], _builder(calls))
    assert len(calls) == 1 and again == folder and value_again == value == {"final_loss": 0.5, "steps": 1}
    assert (folder / "weights.txt").read_text() == "build 1"
    other, value_other = cached_build(tmp_path, "m", ["--max_steps", "4"], _builder(calls))
    assert len(calls) == 2 and other != folder and value_other["steps"] == 2
    assert not folder.exists()  # the old recipe's entry is gone: one entry per name
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([".lock", other.parent.name])


def test_a_failed_build_leaves_nothing_and_the_next_builds(tmp_path):
    def broken(out):
        out.mkdir(parents=True)
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-training")

    with pytest.raises(RuntimeError, match="killed"):
        cached_build(tmp_path, "m", [1], broken)
    assert not [p for p in (tmp_path / "m").iterdir() if not p.name.startswith(".")]  # no complete entry
    calls = []
    folder, _ = cached_build(tmp_path, "m", [1], _builder(calls))
    assert len(calls) == 1 and folder.is_dir()
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([".lock", folder.parent.name])


def test_the_key_covers_the_package_source(tmp_path, monkeypatch):
    import conftest

    calls = []
    first, _ = cached_build(tmp_path, "m", [1], _builder(calls))
    assert len(package_tree_hash()) == 64
    monkeypatch.setattr(conftest, "_TREE_HASH", ["0" * 64])  # as if a package file had changed
    second, _ = cached_build(tmp_path, "m", [1], _builder(calls))
    assert len(calls) == 2 and second != first
    assert json.loads((second.parent / "value.json").read_text())["steps"] == 2
