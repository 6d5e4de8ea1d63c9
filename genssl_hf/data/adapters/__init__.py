"""Adapters from the official on-disk layouts of chest X-ray datasets to canonical
``datasets.Dataset`` objects (schema: :mod:`genssl_hf.data.schema`).

Every adapter streams its source (CSV rows read lazily), validates it before building (unknown
label values and rows pointing to missing or broken files give a :class:`CXRDataError` naming
the file, the line and the value), stores 8-bit images as lazy path references and 16-bit / DICOM
images as windowed 8-bit PNG bytes, and caches the result in the ``datasets`` cache. See
:mod:`genssl_hf.data.adapters._common` for the details.
"""

from ._common import CXRDataError, embed_images, iter_csv
from .chexpert import MIXED_U_ONES, UNCERTAINTY_POLICIES, load_chexpert
from .covidx import load_covidx
from .generic import load_image_csv, load_image_folder, load_unlabelled_images
from .mimic import load_mimic_cxr
from .nih import load_nih_cxr14
from .shared import KERMANY_LABELS, kermany_patient_id, load_kermany, load_nih_subset
from .split import stratified_split

__all__ = [
    "CXRDataError",
    "KERMANY_LABELS",
    "embed_images",
    "MIXED_U_ONES",
    "UNCERTAINTY_POLICIES",
    "iter_csv",
    "kermany_patient_id",
    "load_chexpert",
    "load_covidx",
    "load_image_csv",
    "load_image_folder",
    "load_unlabelled_images",
    "load_kermany",
    "load_mimic_cxr",
    "load_nih_cxr14",
    "load_nih_subset",
    "stratified_split",
]
