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
    COVIDX3,
    NIH14,
    cxr_features,
    from_multi_hot,
    is_multi_label,
    label_names_of,
    to_multi_hot,
)
