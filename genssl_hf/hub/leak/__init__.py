"""Leak guard: refuse to publish a folder that carries report text or pixels of real data.

Two in-memory indexes are built from the real data an artifact was derived from and every file
of an outgoing folder is checked against them before anything is written or uploaded:

* **report text** (:class:`ReportIndex`): every report is cut into segments at sentence
  punctuation and line breaks, lower-cased and reduced to alphanumeric tokens. Whole segments of at
  least ``min_sentence_tokens`` tokens and every run of ``ngram`` consecutive tokens are kept as
  keyed 64-bit BLAKE2b digests (the key is drawn per process, so the index cannot be replayed
  against a dictionary and is never written anywhere). Short generic sentences ("No
  pneumothorax.") are below both limits on purpose: they are vocabulary, not a report, and the
  shipped prompt sets and phantom reports use them.
* **real pixels** (:class:`ImageIndex`): the exact SHA-256 of each image's decoded grayscale
  pixels at its stored size, and a 32 x 32 box-filtered, rank-transformed, mean-centred, unit-norm
  thumbnail (the rank transform makes any monotone intensity change, gamma, contrast, brightness,
  invisible). An outgoing image is a copy when its pixels hash equal, or when its thumbnail's
  cosine similarity to a real one reaches ``near_threshold`` (0.995 by default). The outgoing
  image is also compared in its 7 other flips / 90-degree rotations, and against thumbnails of
  15 crops of each real image (95 / 90 / 80 % of each side, at the centre and the four corners;
  ``CROP_THRESHOLD`` 0.99), so mirrored, rotated and cropped copies are found; crops far from
  those boxes, and partial copies (an MAE's masked input) are not, which is why model folders
  ship no figures by default (see ``genssl_hf.hub.publish.select_files``). Figures and sample
  grids are also cut into their panels at uniform gutters, and each panel is compared the same
  way, so a real image pasted into a ``render_grid`` sheet or a matplotlib figure is found.

Disguises (:mod:`.disguise`): compressed files and archives (gzip, bzip2, xz, zip, tar, by content)
are unpacked and their members scanned (an unreadable or bomb-sized one is refused); base64 runs
and data URIs in text are decoded and scanned by what they hold (image, archive, text).

Files looked at: PNG/JPEG/other PIL images, images and strings inside parquet shards (including
``datasets.Image`` structs), ``.npy``/``.npz`` arrays shaped like images, safetensors headers,
every text file (JSON, Markdown, YAML, vocabularies, ...; base64 in them is decoded and checked),
and printable runs inside other binary files.

Modules: :mod:`.text_index` (reports), :mod:`.image_index` (pixels), :mod:`.index` (both, built
from real-data paths), :mod:`.readers` (parquet / image bytes), :mod:`.scan` (outgoing files).
"""

from .image_index import IMAGE_EXTENSIONS, ImageIndex
from .index import RealDataIndex, build_real_data_index, describe_index
from .scan import LeakError, LeakFinding, check_folder, check_text, decode_text, scan_files, scan_folder
from .text_index import REPORT_ARCHIVE_SUFFIXES, ReportIndex, _iter_report_archive

__all__ = [
    "LeakError",
    "LeakFinding",
    "ReportIndex",
    "ImageIndex",
    "RealDataIndex",
    "build_real_data_index",
    "scan_folder",
    "scan_files",
    "check_folder",
    "check_text",
    "decode_text",
    "describe_index",
    "IMAGE_EXTENSIONS",
    "REPORT_ARCHIVE_SUFFIXES",
    "_iter_report_archive",
]
