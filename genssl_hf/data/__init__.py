"""genssl_hf.data: the canonical chest X-ray schema, real-dataset adapters, image I/O and the
procedural phantom chest X-ray world.

The names below are imported from their submodule on first use (PEP 562), so ``import
genssl_hf.data`` (and ``genssl_hf.data.schema`` for the label lists) does not pull in ``datasets``,
scipy and PIL until they are needed; ``from genssl_hf.data import read_cxr`` works as before."""

from genssl_hf.utils import lazy_exports

_EXPORTS = {
    name: module
    for module, names in {
        "export": ("export_parquet",),
        "phantom": (
            "PhantomConfig",
            "PhantomSample",
            "finding_gallery",
            "findings_from_text",
            "phantom_dataset",
            "phantom_splits",
            "render_grid",
            "sample_phantom",
            "write_report",
        ),
        "schema": (
            "CHEXPERT5",
            "CHEXPERT14",
            "COVIDX3",
            "NIH14",
            "cxr_features",
            "from_multi_hot",
            "is_multi_label",
            "label_names_of",
            "to_multi_hot",
        ),
        "adapters": (
            "CXRDataError",
            "embed_images",
            "load_chexpert",
            "load_covidx",
            "load_image_csv",
            "load_image_folder",
            "load_kermany",
            "load_mimic_cxr",
            "load_nih_cxr14",
            "load_nih_subset",
            "stratified_split",
        ),
        "io": ("CXRReadError", "SkippedFile", "encode_png", "read_cxr", "to_pil"),
        "reports": ("iter_iu_reports", "iter_mimic_reports", "load_iu_reports", "load_mimic_reports"),
    }.items()
    for name in names
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
