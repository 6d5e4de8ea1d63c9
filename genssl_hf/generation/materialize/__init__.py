"""Materialise generated chest X-rays as a Hugging Face ``datasets`` dataset.

``generate_dataset`` runs a text-to-image generator over a balanced prompt plan (or over a report
corpus, one image per report) and streams the images into parquet shards that
``datasets.load_dataset(<out>)`` opens directly, with or without ``streaming=True``, and that
push to the Hub as they are.

One concept per module:

========================  ======================================================================
``plan``                  what to generate: prompt sets and report corpora, validated and hashed
``generators``            generator backends: phantom, a diffusers pipeline folder, ``module:factory``
``layout``                folder names, the shard-size rule, :class:`ShardLayout`
``rows``                  the schema and the row sources (prompt, labels, metadata of index ``i``)
``shards``                atomic chunk / shard writing and the processes' file-based sync
``job``                   :class:`GenerationOptions` checked into one run's plan; :class:`GenerationResult`
``writer``                :func:`generate_dataset` as small steps: folder set-up, shards, verification
``verify``                :func:`verify_dataset`
``card``                  the dataset card and the Hub upload
``cli``                   ``scripts/generate_dataset.py`` / ``python -m genssl_hf.generation.materialize``
========================  ======================================================================

Determinism
    Sample ``i`` gets its prompt and its seed from (prompt set, N, global seed, i) alone (see
    :mod:`genssl_hf.generation.balance`), and the generator makes each image from its own seed,
    so the dataset does not depend on the number of processes, the batch size, or on where a run
    was interrupted.

Layout
    ``data/train-KKKKK-of-TTTTT.parquet`` (see :mod:`.layout`). Processes take the shards
    round-robin; a shard belongs to exactly one process, so processes never write the same file.

Crash safety and resume
    A shard is produced in checkpoint chunks of ``rows_per_checkpoint`` images, each written to
    a temporary file, fsync'ed and atomically renamed into ``.incomplete/<shard>/``. When all
    chunks of a shard exist they are streamed into a temporary shard file, which is renamed into
    ``data/`` (an atomic rename on the same file system): a file in ``data/`` is always complete.
    A rerun with the same settings skips complete shards and complete chunks, regenerates only
    the chunk that was in flight, and refuses to continue a folder started with settings that
    would change its content. At the end the main process reads the ``index`` column of every
    shard and reports missing, duplicate or unexpected indices (``verification.json``).

Memory
    At most one checkpoint chunk of encoded images per process is held in memory, whatever N is.

Report-conditioned generation
    With ``reports=`` each report of a corpus becomes the prompt of one image (index = row).
    The published dataset holds a SHA-256 of each report, never its text, unless
    ``keep_prompt_text=True``; the card records the corpus's content hash, not its text.
"""

from .card import push_dataset_to_hub, write_dataset_card
from .cli import build_parser, dist_is_main, main
from .generators import (
    DiffusersGenerator,
    ImageGenerator,
    PhantomGenerator,
    check_generator_spec,
    default_generator_id,
    load_generator,
    to_uint8_gray,
)
from .layout import (
    CONFIG_NAME,
    DATA_DIR,
    DEFAULT_ROWS_PER_CHECKPOINT,
    DEFAULT_SHARD_SIZE,
    FORMAT_VERSION,
    INCOMPLETE_DIR,
    MAX_FILES_PER_FOLDER,
    SPLIT,
    VERIFICATION_NAME,
    ShardLayout,
    parse_shard_size,
    shard_images_for,
)
from .plan import ReportCorpus, load_prompts, load_report_corpus, report_hash
from .rows import generated_features
from .verify import VerificationReport, verify_dataset
from .job import GenerationOptions, GenerationResult
from .writer import generate_dataset

__all__ = [
    "ImageGenerator",
    "DiffusersGenerator",
    "PhantomGenerator",
    "ReportCorpus",
    "ShardLayout",
    "GenerationOptions",
    "GenerationResult",
    "VerificationReport",
    "load_prompts",
    "load_report_corpus",
    "load_generator",
    "check_generator_spec",
    "default_generator_id",
    "generated_features",
    "parse_shard_size",
    "shard_images_for",
    "report_hash",
    "to_uint8_gray",
    "generate_dataset",
    "verify_dataset",
    "write_dataset_card",
    "push_dataset_to_hub",
    "build_parser",
    "dist_is_main",
    "main",
    "CONFIG_NAME",
    "DATA_DIR",
    "DEFAULT_ROWS_PER_CHECKPOINT",
    "DEFAULT_SHARD_SIZE",
    "FORMAT_VERSION",
    "INCOMPLETE_DIR",
    "MAX_FILES_PER_FOLDER",
    "SPLIT",
    "VERIFICATION_NAME",
]
