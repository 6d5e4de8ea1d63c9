"""Per-sample plan of a generated dataset: which prompt and which seed each index gets.

Everything here is a pure function of (prompt set, N, global seed): it never depends on the
number of processes, the batch size or the order in which shards are produced, so any worker can
compute the prompt and seed of any index without coordination and without holding a table of N
entries (the plan costs O(number of prompts) memory, whatever N is).

Balance rule (as in the paper: an equal number of images per class label)
--------------------------------------------------------------------------
1. The classes are the distinct ``class_label`` values of the prompt set, in order of first
   appearance ("Atelectasis" / "no Atelectasis" ... for the elaborated set, one class per disease
   for the disease and heuristic sets).
2. ``N`` is split equally over the ``C`` classes: each gets ``N // C`` images and the first
   ``N % C`` classes (in that order) get one more. ``N < C`` is an error: some class would be empty.
3. A class's count ``n_c`` is split equally over its ``P_c`` prompts the same way: ``n_c // P_c``
   each, and the first ``n_c % P_c`` prompts of the class (in prompt-set order) get one more.

Interleaving
------------
Index ``i`` gets the prompt that owns slot ``s(i) = (a * i) mod N`` when the slots ``0 .. N-1``
are laid out prompt after prompt (prompt ``p`` owns ``count_p`` consecutive slots). ``a`` is the
integer closest to ``N * (sqrt(5) - 1) / 2`` that is coprime with ``N``, so ``s`` is a
permutation and consecutive indices jump by a golden-ratio fraction of the slot range: every
window of consecutive indices (a shard, a prefix of an interrupted run, a streaming buffer) holds
the prompts in almost exactly their global proportions (the three-distance theorem), with no
random shuffle to store.

Seeds
-----
The seed of index ``i`` is the first 63 bits of ``numpy.random.SeedSequence([global_seed, i])``
(two 32-bit words of its state). SeedSequence hashes its entropy, so neighbouring indices get
unrelated seeds, and 63 bits keep accidental seed collisions negligible even at millions of
images (32-bit seeds would already collide about 1000 times among 3M images); 63 rather than 64
bits so the seed fits the ``int64`` column and ``torch.Generator.manual_seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def sample_seed(global_seed: int, index: int) -> int:
    """The 63-bit seed of sample ``index`` of a run with ``global_seed`` (see module doc)."""
    if int(global_seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={global_seed}, index={index}")
    lo, hi = np.random.SeedSequence([int(global_seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int(((int(hi) << 32) | int(lo)) & ((1 << 63) - 1))


def golden_stride(n: int) -> int:
    """The multiplier ``a`` of the slot permutation: closest to ``n * 0.618...``, coprime with ``n``."""
    if n <= 2:
        return 1
    centre = int(round(n * _GOLDEN))
    for delta in range(n):
        for a in (centre - delta, centre + delta):
            if 0 < a < n and math.gcd(a, n) == 1:
                return a
    return 1  # unreachable: 1 is always coprime


@dataclass(frozen=True)
class BalancePlan:
    """Counts per class and per prompt, and the index -> prompt mapping (see module doc)."""

    num_images: int
    class_names: tuple[str, ...]
    prompt_class: tuple[int, ...]  # class id of each prompt
    prompt_counts: tuple[int, ...]  # images per prompt
    stride: int

    @property
    def class_counts(self) -> tuple[int, ...]:
        counts = [0] * len(self.class_names)
        for c, n in zip(self.prompt_class, self.prompt_counts):
            counts[c] += n
        return tuple(counts)

    def prompt_ids(self, start: int, stop: int) -> np.ndarray:
        """Prompt id of each index in ``start .. stop - 1``."""
        if not 0 <= start <= stop <= self.num_images:
            raise ValueError(f"index range [{start}, {stop}) is outside [0, {self.num_images})")
        idx = np.arange(start, stop, dtype=np.int64)
        # (a * i) mod N without int64 overflow for any realistic N (a, i < N < 3e9).
        slots = (
            (idx * self.stride) % self.num_images
            if self.num_images < 3_000_000_000
            else np.array([(int(i) * self.stride) % self.num_images for i in idx], dtype=np.int64)
        )
        bounds = np.cumsum(self.prompt_counts)
        return np.searchsorted(bounds, slots, side="right").astype(np.int64)


def balance_plan(class_labels: Sequence[str], num_images: int) -> BalancePlan:
    """Plan ``num_images`` images over prompts whose classes are ``class_labels`` (one per prompt).

    Raises a ``ValueError`` naming the numbers when the balance is impossible (fewer images than
    classes) or the inputs are empty.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images <= 0:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    num_images = int(num_images)
    if not class_labels:
        raise ValueError("the prompt set is empty: nothing to balance over")
    class_names: list[str] = []
    for label in class_labels:
        if label not in class_names:
            class_names.append(label)
    if num_images < len(class_names):
        raise ValueError(
            f"impossible balance: {num_images} images cannot cover the {len(class_names)} class labels "
            f"of the prompt set ({', '.join(class_names)}); ask for at least {len(class_names)} images"
        )
    cid = {name: i for i, name in enumerate(class_names)}
    prompt_class = [cid[label] for label in class_labels]
    per_class, extra = divmod(num_images, len(class_names))
    class_totals = [per_class + (1 if c < extra else 0) for c in range(len(class_names))]
    prompt_counts = [0] * len(class_labels)
    for c, total in enumerate(class_totals):
        members = [p for p, pc in enumerate(prompt_class) if pc == c]
        q, r = divmod(total, len(members))
        for rank, p in enumerate(members):
            prompt_counts[p] = q + (1 if rank < r else 0)
    return BalancePlan(
        num_images=num_images,
        class_names=tuple(class_names),
        prompt_class=tuple(prompt_class),
        prompt_counts=tuple(prompt_counts),
        stride=golden_stride(num_images),
    )
