"""A generator folder with a loader module (``pipeline.py``) loads under a machine-wide lock: diffusers
rewrites that module into one shared modules cache on every load and imports it from there, so two
processes loading at once (the ranks of ``accelerate launch``) could import it half-written."""

from __future__ import annotations

import os

from diffusers import DiffusionPipeline
from diffusers.utils import HF_MODULES_CACHE
from filelock import FileLock, Timeout

from genssl_hf.generation import CXRLatentDiffusionPipeline
from genssl_hf.generation.folder_code import has_own_loader_code
from genssl_hf.generation.pretrained import load_phantom_generator

LOCK = os.path.join(HF_MODULES_CACHE, "genssl_hf_loader_module.lock")


def _held_by_someone() -> bool:
    probe = FileLock(LOCK, timeout=0)  # another open file: flock conflicts even within this process
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


def test_a_folder_with_a_loader_module_loads_under_the_modules_cache_lock(monkeypatch, tmp_path):
    folder = tmp_path / "generator"
    load_phantom_generator().save_pretrained(folder)  # saving writes the loader module
    assert has_own_loader_code(folder)
    diffusers_load = DiffusionPipeline.from_pretrained.__func__
    held_during_load = []

    def probing_load(cls, path, **kwargs):
        held_during_load.append(_held_by_someone())
        return diffusers_load(cls, path, **kwargs)

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", classmethod(probing_load))
    pipe = CXRLatentDiffusionPipeline.from_pretrained(folder)
    assert isinstance(pipe, CXRLatentDiffusionPipeline)
    assert held_during_load == [True]
    assert not _held_by_someone()  # released after the load
