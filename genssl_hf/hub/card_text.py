"""Text shared by every published card: intended use, limitations, data-source attributions and
the citation. Kept here (not in a template include) so the publisher can add it to any card,
including cards rendered by other stages' templates."""

from __future__ import annotations

from .cards import DISCLAIMER

INTENDED_USE = (
    "Research on generative self-supervised pre-training for chest X-ray classification (GEN-SSL): "
    "reproducing, ablating and extending the method, and benchmarking representation learning. " + DISCLAIMER
)

LIMITATIONS = (
    "Not validated on any clinical population and not for diagnosis, triage or any decision about a "
    "patient. Results on the (phantom, public or synthetic) data used here say nothing about other "
    "hospitals, devices or populations; labels of public chest X-ray datasets are mined from reports "
    "and noisy. Synthetic images are not real patient images and must never be presented as such."
)

LEAK_STATEMENT = (
    "Before publication every file of this repository was checked by `genssl_hf.hub.leak` against "
    "the real data named below (hashed report sentences and long n-grams; exact pixel hashes and "
    "thumbnail similarity of the real images): it carries no report text and no pixels of real "
    "data, only aggregate statistics (such as the AdaIN reference mean and standard deviation)."
)

# Real data sources genssl_hf can derive statistics, prompt scores or evaluations from.
DATA_SOURCES: dict[str, str] = {
    "iu-xray": (
        "Indiana University chest X-ray reports (Open-i), CC BY-NC-ND 4.0. Demner-Fushman D et al., "
        '"Preparing a collection of radiology examinations for distribution and retrieval", JAMIA 2016.'
    ),
    "kermany": (
        'Paediatric chest X-rays, CC BY 4.0. Kermany D, Zhang K, Goldbaum M (2018), "Labeled Optical '
        'Coherence Tomography (OCT) and Chest X-Ray Images for Classification", Mendeley Data v2, '
        "doi:10.17632/rscbjbr9sj.2."
    ),
    "nih-cxr14": (
        'NIH ChestX-ray14, provided by the NIH Clinical Center. Wang X et al., "ChestX-ray8: '
        'Hospital-scale Chest X-ray Database and Benchmarks", CVPR 2017.'
    ),
    "phantom": "The genssl_hf phantom chest X-ray world (procedural, no patient data).",
}

GENSSL_CITATION = """@article{genssl,
  title  = {Generative self-supervised learning for chest X-ray classification},
  note   = {GEN-SSL; reproduced in the Hugging Face ecosystem by genssl_hf}
}"""


def data_sources_for(text: str) -> list[str]:
    """The :data:`DATA_SOURCES` keys whose names appear in ``text`` (provenance, paths, card)."""
    t = text.lower()
    keys = {
        "iu-xray": ("iu-xray", "nlmcxr", "indiana", "iu_report", "iu-report", "open-i"),
        "kermany": ("kermany", "pneumonia"),
        "nih-cxr14": ("nih", "chestx-ray14", "cxr14", "chestxray14"),
        "phantom": ("phantom",),
    }
    return [k for k, words in keys.items() if any(w in t for w in words)]
