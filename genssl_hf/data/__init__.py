"""genssl_hf.data: the canonical chest X-ray schema, real-dataset adapters, image I/O and the
procedural phantom chest X-ray world."""

from .export import export_parquet
from .phantom import (
    PhantomConfig,
    PhantomSample,
    finding_gallery,
    findings_from_text,
    phantom_dataset,
    phantom_splits,
    render_grid,
    sample_phantom,
    write_report,
)
from .schema import (
    CHEXPERT5,
    CHEXPERT14,
    COVIDX3,
    NIH14,
    cxr_features,
    from_multi_hot,
    is_multi_label,
    label_names_of,
    to_multi_hot,
)
from .adapters import (
    CXRDataError,
    embed_images,
    load_chexpert,
    load_covidx,
    load_image_csv,
    load_image_folder,
    load_kermany,
    load_mimic_cxr,
    load_nih_cxr14,
    load_nih_subset,
    stratified_split,
)
from .io import CXRReadError, SkippedFile, encode_png, read_cxr, to_pil
from .reports import iter_iu_reports, iter_mimic_reports, load_iu_reports, load_mimic_reports
