"""Multi-node dataset generation (issue 33.5): the shards of a generated dataset are handed out to
N ranks (one machine or several: ranks only see the shared output folder) without duplicates or
gaps, for N = 1, 2, 3, 8, on a fresh folder and on a resumed one. The ranks are simulated in one
process through the writer's own set-up (:func:`_set_up_folder`) with a no-op barrier."""

from __future__ import annotations

import pytest

from genssl_hf.generation.materialize import GenerationOptions
from genssl_hf.generation.materialize.job import _plan_job
from genssl_hf.generation.materialize.shards import _Dist
from genssl_hf.generation.materialize.writer import _set_up_folder

NUM_IMAGES, SHARD_IMAGES = 50, 4  # 13 shards, the last one short


def _job(out):
    options = GenerationOptions(
        prompts="heuristic", num_images=NUM_IMAGES, height=32, width=32, shard_size=SHARD_IMAGES
    )
    return _plan_job(out, "phantom", options)


def _assign(out, world: int) -> list[list[int]]:
    """Every rank's shards, rank 0 first (it sets the folder up, as it does behind the barrier)."""
    return [_set_up_folder(_job(out), _Dist(rank=r, world=world))[1] for r in range(world)]


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_every_shard_once_on_a_fresh_and_a_resumed_folder(tmp_path, world):
    out = tmp_path / "ds"
    layout = _job(out).layout
    # the shards tile the images: contiguous, no overlap, nothing past the end
    ranges = [layout.shard_range(k) for k in range(layout.num_shards)]
    assert ranges[0][0] == 0 and ranges[-1][1] == NUM_IMAGES
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])) and layout.num_shards == 13

    shares = _assign(out, world)
    taken = [k for s in shares for k in s]
    assert sorted(taken) == list(range(layout.num_shards))  # no gap, no duplicate
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced round robin

    # resume: the shards already stored are skipped, the rest is again split without overlap
    done = {0, 3, 4, 11}
    for k in done:
        path = out / layout.shard_relpath(k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stored")
    shares = _assign(out, world)
    taken = [k for s in shares for k in s]
    assert sorted(taken) == sorted(set(range(layout.num_shards)) - done)
