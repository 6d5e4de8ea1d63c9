"""The phantom chest X-ray world: procedural, seeded, deterministic chest radiographs.

Every image is rendered analytically from a few anatomical primitives (body outline, lungs,
heart, mediastinum and spine, ribs, clavicles, diaphragm domes with costophrenic angles, gastric
bubble) as a map of X-ray attenuation, then exposed as ``1 - exp(-mu * density)`` so that dense
structures are bright (MONOCHROME2), as on a real radiograph. The findings are the CheXpert
five, each with a size (small / big) and, where it makes sense, a side:

===================  ======================================================  ==================
finding              rendering                                               sides
===================  ======================================================  ==================
Atelectasis          plate-like (small) or wedge (big) opacity running from   left/right/bilateral
                     the hilum to the base, with volume loss (raised
                     hemidiaphragm, mediastinal shift toward the side)
Cardiomegaly         cardiothoracic ratio 0.55-0.60 (small) / 0.63-0.72       none
                     (big) instead of 0.40-0.48
Consolidation        dense patchy opacity (thresholded smooth noise) in a     left/right/bilateral
                     lower/mid zone, with air bronchograms
Edema                bilateral perihilar ("bat-wing") haze; big adds Kerley   bilateral
                     B lines at the bases
Pleural Effusion     basal fluid with a meniscus rising laterally, blunting   left/right/bilateral
                     the costophrenic angle; small fills ~12 %, big ~35 %
                     of the lung height
===================  ======================================================  ==================

Sides follow the radiological convention: the patient's right is on the image's left.
Acquisition varies per image: exposure, contrast (gamma), quantum noise, blur, small rotation,
scale and shift. Each sample carries its multi-hot labels, its finding parameters and a short
report written from them ("Big left-sided pleural effusion. No cardiomegaly. ..."), so the
phantom world is also a report corpus whose vocabulary matches the heuristic prompt set.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from scipy import ndimage

from .schema import CHEXPERT5, cxr_features

SIZES = ("small", "big")
SIDES = ("left", "right", "bilateral")
SIDED_FINDINGS = ("Atelectasis", "Consolidation", "Pleural Effusion")
FINDING_SIDES: dict[str, tuple[str, ...]] = {
    "Atelectasis": SIDES,
    "Cardiomegaly": (),
    "Consolidation": SIDES,
    "Edema": ("bilateral",),
    "Pleural Effusion": SIDES,
}
PHANTOM_SOURCE = "genssl_hf-phantom"
PHANTOM_VERSION = "1"
MIN_SIZE, MAX_SIZE = 32, 1024
SOFT_TISSUE = 0.62  # attenuation units of the chest wall at its thickest
AIR_DEFICIT = 0.45  # how much aerated lung lowers the attenuation


@dataclass(frozen=True)
class PhantomConfig:
    """Settings of the phantom world. ``prevalence`` is the per-finding probability of being present
    when findings are sampled at random (findings are drawn independently)."""

    prevalence: float = 0.3
    max_rotation_deg: float = 4.0
    noise_std: tuple[float, float] = (0.004, 0.03)
    blur_sigma_px128: tuple[float, float] = (0.0, 1.0)  # in pixels at 128 px; scales with size
    exposure: tuple[float, float] = (1.6, 2.4)  # mu in 1 - exp(-mu * density)
    gamma: tuple[float, float] = (0.85, 1.2)

    def __post_init__(self):
        if not 0.0 <= self.prevalence <= 1.0:
            raise ValueError(f"prevalence must lie in [0, 1], got {self.prevalence}")


@dataclass
class PhantomSample:
    image: np.ndarray  # uint8 (H, W), bright = dense
    labels: np.ndarray  # float32 multi-hot over CHEXPERT5
    findings: dict[str, dict[str, Any]]  # present findings -> {"size", "side", ...rendering params}
    acquisition: dict[str, float]
    report: str
    seed: int
    size: int = field(default=0)

    @property
    def label_indices(self) -> list[int]:
        return [i for i, v in enumerate(self.labels) if v > 0.5]


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"phantom size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] px, got {size!r}")
    return int(size)


def normalise_findings(findings: Mapping[str, Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Validate a finding spec ``{name: {"size": "small"|"big", "side": ...}}``; fill defaults."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in findings.items():
        if name not in FINDING_SIDES:
            raise ValueError(f"unknown phantom finding {name!r}; known: {list(CHEXPERT5)}")
        spec = dict(spec or {})
        size = spec.setdefault("size", "big")
        if size not in SIZES:
            raise ValueError(f"finding {name!r}: size must be one of {SIZES}, got {size!r}")
        sides = FINDING_SIDES[name]
        if sides:
            side = spec.setdefault("side", "bilateral" if len(sides) == 1 else "right")
            if side not in sides:
                raise ValueError(f"finding {name!r}: side must be one of {sides}, got {side!r}")
        elif spec.get("side") not in (None, ""):
            raise ValueError(f"finding {name!r} has no side, got side={spec['side']!r}")
        else:
            spec.pop("side", None)
        out[name] = spec
    return out


def sample_findings(rng: np.random.Generator, prevalence: float = 0.3) -> dict[str, dict[str, Any]]:
    """Draw each finding independently with probability ``prevalence``, then its size and side."""
    findings = {}
    for name in CHEXPERT5:
        if rng.random() < prevalence:
            spec = {"size": SIZES[int(rng.integers(2))]}
            sides = FINDING_SIDES[name]
            if sides:
                spec["side"] = sides[int(rng.integers(len(sides)))]
            findings[name] = spec
    return findings


def write_report(findings: Mapping[str, Mapping[str, Any]]) -> str:
    """A short radiology-style report from the finding spec, in the heuristic-prompt vocabulary."""
    sentences = []
    for name in CHEXPERT5:
        if name in findings:
            spec = findings[name]
            words = [spec["size"].capitalize()]
            if "side" in spec:
                words.append("bilateral" if spec["side"] == "bilateral" else f"{spec['side']}-sided")
            words.append(name.lower())
            sentences.append(" ".join(words) + ".")
    for name in CHEXPERT5:
        if name not in findings:
            sentences.append(f"No {name.lower()}.")
    return " ".join(sentences)


_PROMPT_SIZE = {"small": "small", "big": "big", "large": "big", "mild": "small", "moderate": "big", "massive": "big"}


def findings_from_text(text: str) -> dict[str, dict[str, Any]]:
    """Parse a report or prompt in the phantom vocabulary back into a finding spec.

    Understands "Big left-sided pleural effusion", "Small bilateral atelectasis", "Cardiomegaly",
    "Edema with pulmonary venous congestion" (the disease word alone means present with default
    size), "No X" and "X with no <feature>" (absent, the negative class of an elaborated prompt). Unknown words are ignored, so a heuristic or disease prompt maps to its finding.
    """
    spec: dict[str, dict[str, Any]] = {}
    for sentence in [s.strip().lower() for s in text.replace(",", ".").split(".") if s.strip()]:
        for name in CHEXPERT5:
            key = name.lower()
            if key not in sentence:
                continue
            before, _, after = sentence.partition(key)
            before = before.split()
            if before[-1:] == ["no"] or sentence.startswith("no "):
                continue
            # "{Disease} with no {feature}" stands for the negative class in the elaborated prompt
            # sets (genssl_hf.prompts), so it renders as absent here too.
            if after.strip().startswith(("with no ", "without ")):
                continue
            entry: dict[str, Any] = {}
            for w in before:
                if w in _PROMPT_SIZE:
                    entry["size"] = _PROMPT_SIZE[w]
                side = w.removesuffix("-sided")
                if side in SIDES and FINDING_SIDES[name] and side in FINDING_SIDES[name]:
                    entry["side"] = side
            spec[name] = entry
    return normalise_findings(spec)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return field_ / (field_.std() + 1e-6)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _soft(inside: np.ndarray, px: float) -> np.ndarray:
    """Soft indicator of ``inside > 0`` with an edge about one pixel wide (``px`` = one pixel in
    normalised units), which keeps edges resolution-independent and anti-aliased."""
    return _sigmoid(inside / px)


def render_phantom(
    size: int,
    findings: Mapping[str, Mapping[str, Any]],
    rng: np.random.Generator,
    config: PhantomConfig = PhantomConfig(),
) -> tuple[np.ndarray, dict[str, dict[str, Any]], dict[str, float]]:
    """Render one phantom; returns (uint8 image, findings with rendering params, acquisition)."""
    size = _check_size(size)
    findings = {k: dict(v) for k, v in normalise_findings(findings).items()}
    px = 2.0 / size
    # Independent streams: the same seed gives the same patient and acquisition whatever the
    # findings, so a finding can be added or removed counterfactually.
    anat, find, acq = rng.spawn(3)

    # Acquisition geometry: rotating/scaling the sampling grid renders the transform exactly.
    angle = math.radians(acq.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    scale = acq.uniform(0.94, 1.06)
    shift = acq.uniform(-0.04, 0.04, size=2)
    lin = (np.arange(size, dtype=np.float32) + 0.5) * px - 1.0
    gy, gx = np.meshgrid(lin, lin, indexing="ij")
    ca, sa = math.cos(angle), math.sin(angle)
    x = (ca * gx - sa * gy) * scale + shift[0]
    y = (sa * gx + ca * gy) * scale + shift[1]
    ax = np.abs(x)

    # Anatomy variation.
    lung_h = anat.uniform(0.56, 0.64)
    lung_w = anat.uniform(0.25, 0.29)
    lung_cx = anat.uniform(0.37, 0.42)
    lung_cy = anat.uniform(-0.08, -0.0)
    base = {-1: anat.uniform(0.42, 0.48), 1: anat.uniform(0.48, 0.54)}  # patient right (image left) higher
    shift_med = 0.0

    # Volume loss of atelectasis raises the hemidiaphragm and pulls the mediastinum toward it.
    if "Atelectasis" in findings:
        spec = findings["Atelectasis"]
        lift = find.uniform(0.03, 0.05) if spec["size"] == "small" else find.uniform(0.08, 0.12)
        for s in _sides(spec["side"]):
            base[s] -= lift
        if spec["side"] != "bilateral":
            shift_med = _sides(spec["side"])[0] * lift * 0.5
        spec["diaphragm_lift"] = round(float(lift), 4)

    density = np.zeros((size, size), np.float32)
    body = _soft(1.0 - ((x / 0.93) ** 4 + ((y - 0.12) / 1.12) ** 4), px * 4)
    neck = _soft(0.16 - ax, px) * _soft(-0.75 - y, px)
    body = np.maximum(body, neck)
    # Soft tissue is thicker in the middle of the chest than at its edges.
    thickness = np.sqrt(np.clip(1.0 - (x / 0.95) ** 2, 0.05, 1.0))
    density += SOFT_TISSUE * body * (0.55 + 0.45 * thickness)

    lungs = np.zeros_like(density)
    lung_masks: dict[int, np.ndarray] = {}
    top = lung_cy - lung_h
    for s in (-1, 1):
        cx = s * lung_cx
        # Apex rounded (sqrt profile), widest near the base; the dome cuts the base and meets the
        # lateral wall in a sharp costophrenic angle.
        v = np.clip((y - top) / (lung_h * 0.85), 0, 1)
        lateral = 0.1 + (lung_cx + lung_w - 0.1) * v**0.38
        medial = 0.085 + 0.03 * v
        dome = base[s] - 0.13 * np.clip(1.0 - ((x - cx) / (lung_w * 1.15)) ** 2, 0, None)
        mask = _soft(lateral - s * x, px * 1.5) * _soft(s * x - medial, px) * _soft(dome - y, px) * _soft(y - top, px * 2)
        lung_masks[s] = mask
        lungs = np.maximum(lungs, mask)

    # Heart: cardiothoracic ratio sets its width relative to the widest thorax.
    thorax_w = 2 * (lung_cx + lung_w)
    if "Cardiomegaly" in findings:
        spec = findings["Cardiomegaly"]
        ctr = find.uniform(0.55, 0.60) if spec["size"] == "small" else find.uniform(0.63, 0.72)
        spec["cardiothoracic_ratio"] = round(float(ctr), 4)
    else:
        ctr = anat.uniform(0.40, 0.48)
    heart_hw = ctr * thorax_w / 2
    heart_cx = 0.25 * heart_hw + shift_med
    heart_hh = anat.uniform(0.27, 0.32)
    heart_cy = min(base[-1], base[1]) - heart_hh + 0.16
    heart = _soft(1.0 - ((x - heart_cx) / heart_hw) ** 2 - ((y - heart_cy) / heart_hh) ** 2, px * 2)
    heart *= _soft(max(base[-1], base[1]) + 0.02 - y, px)
    mediastinum = _soft(0.11 - np.abs(x - shift_med), px) * _soft(heart_cy - y, px)
    soft_tissue_overlap = np.maximum(heart, mediastinum)
    air = lungs * (1.0 - soft_tissue_overlap)

    # Lung air lowers the density; vascular markings fan out from the hila.
    density -= AIR_DEFICIT * air
    vessels = np.zeros_like(density)
    for s in (-1, 1):
        r = np.hypot(x - s * 0.2, (y - 0.0) * 0.9)
        vessels += np.exp(-r / 0.22) * (0.6 + 0.4 * _smooth_noise(anat, density.shape, size / 64))
    density += 0.05 * vessels * air

    # Spine with vertebral bodies, clavicles and ribs.
    spine = _soft(0.065 - np.abs(x - shift_med * 0.3), px) * body
    vert = 0.75 + 0.25 * np.cos(2 * np.pi * (y + 1.0) / 0.115)
    density += 0.22 * spine * vert
    for s in (-1, 1):
        t = np.clip((s * x - 0.08) / 0.6, 0, 1)
        clav_y = -0.72 - 0.12 * t + 0.05 * t**2
        clav = _soft(0.022 - np.abs(y - clav_y), px) * _soft(s * x - 0.08, px) * _soft(0.68 - s * x, px)
        density += 0.15 * clav
    rib_gap = lung_h * 2 / 9.5
    rib_top = lung_cy - lung_h + 0.02
    ribs = np.zeros_like(density)
    for k in range(10):
        y0 = rib_top + k * rib_gap
        curve = y0 + 0.6 * (ax - 0.1) ** 2 - 0.06
        ribs += _soft(0.018 + 0.002 * k - np.abs(y - curve), px)
    density += 0.07 * np.clip(ribs, 0, 1) * _soft(ax - 0.1, px) * _soft(0.74 - ax, px) * body

    # Gastric bubble under the left hemidiaphragm (image right).
    bubble = _soft(1.0 - ((x - 0.42) / 0.1) ** 2 - ((y - base[1] - 0.09) / 0.05) ** 2, px)
    density -= 0.3 * bubble * body

    # Findings. Each replaces lung air (density toward soft tissue) inside its region.
    opacity = np.zeros_like(density)
    if "Pleural Effusion" in findings:
        spec = findings["Pleural Effusion"]
        frac = find.uniform(0.09, 0.15) if spec["size"] == "small" else find.uniform(0.3, 0.42)
        for s in _sides(spec["side"]):
            bottom = base[s]
            level = bottom - frac * 2 * lung_h * 0.75 - 0.22 * np.clip(s * x - lung_cx, 0, None) * 4 * frac
            fluid = lung_masks[s] * _soft(y - level, px * 1.5)
            # Fluid also fills the costophrenic recess below the dome laterally (blunted angle).
            recess = _soft(y - level, px) * _soft(bottom + 0.05 - y, px) * _soft(s * x - lung_cx, px)
            recess *= _soft(lung_cx + lung_w - s * x, px)
            opacity = np.maximum(opacity, 0.95 * np.maximum(fluid, recess * body))
        spec["fill_fraction"] = round(float(frac), 4)
    if "Atelectasis" in findings:
        spec = findings["Atelectasis"]
        for s in _sides(spec["side"]):
            hx, hy = s * 0.18, 0.02
            ex, ey = s * (lung_cx + lung_w * 0.7), base[s] - 0.08
            dx, dy = ex - hx, ey - hy
            length = math.hypot(dx, dy)
            t = np.clip(((x - hx) * dx + (y - hy) * dy) / length**2, 0, 1)
            dist = np.abs((x - hx) * dy - (y - hy) * dx) / length
            width = (0.018 + 0.012 * t) if spec["size"] == "small" else (0.02 + 0.11 * t)
            band = _soft(width - dist, px) * _soft(t - 0.15, 0.02) * lung_masks[s]
            opacity = np.maximum(opacity, 0.7 * band)
    if "Consolidation" in findings:
        spec = findings["Consolidation"]
        radius = find.uniform(0.1, 0.14) if spec["size"] == "small" else find.uniform(0.2, 0.26)
        centres = []
        for s in _sides(spec["side"]):
            cx = s * (lung_cx + find.uniform(-0.06, 0.06))
            cy = find.uniform(0.0, 0.22)
            centres.append([round(float(cx), 3), round(float(cy), 3)])
            region = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2)))
            patchy = _soft(region + 0.35 * _smooth_noise(find, density.shape, size / 40) - 0.55, 0.08)
            bronchi = np.abs(_smooth_noise(find, density.shape, size / 30))
            air_bronchogram = 1.0 - 0.35 * _soft(0.12 - bronchi, 0.05)
            opacity = np.maximum(opacity, 0.85 * patchy * air_bronchogram * lung_masks[s])
        spec["radius"] = round(float(radius), 4)
        spec["centres"] = centres
    if "Edema" in findings:
        spec = findings["Edema"]
        big = spec["size"] == "big"
        sigma = 0.2 if not big else 0.3
        strength = 0.35 if not big else 0.6
        haze = np.zeros_like(density)
        for s in (-1, 1):
            r2 = (x - s * 0.2) ** 2 + ((y - 0.02) / 1.2) ** 2
            haze = np.maximum(haze, np.exp(-r2 / (2 * sigma**2)) * lung_masks[s])
        haze *= 0.8 + 0.2 * _smooth_noise(find, density.shape, size / 50)
        if big:  # Kerley B lines: short horizontal septal lines at the lateral bases.
            kerley = np.zeros_like(density)
            for s in (-1, 1):
                for k in range(5):
                    ky = base[s] - 0.05 - 0.035 * k
                    kx = s * (lung_cx + lung_w * 0.82)
                    kerley += _soft(0.006 - np.abs(y - ky), px * 0.7) * _soft(0.07 - np.abs(x - kx), px)
            haze = np.maximum(haze, 0.8 * np.clip(kerley, 0, 1) * lungs)
        opacity = np.maximum(opacity, strength * haze)
        spec["strength"] = strength
    density += AIR_DEFICIT * opacity * air

    # Exposure, blur, gamma and quantum noise.
    mu = acq.uniform(*config.exposure)
    image = (1.0 - np.exp(-mu * np.clip(density, 0, None))) / (1.0 - math.exp(-mu * 1.1))
    blur = acq.uniform(*config.blur_sigma_px128) * size / 128
    if blur > 0.05:
        image = ndimage.gaussian_filter(image, blur)
    gamma = acq.uniform(*config.gamma)
    image = np.clip(image, 0, 1) ** gamma
    noise_std = acq.uniform(*config.noise_std)
    image = image + noise_std * acq.standard_normal(image.shape).astype(np.float32)
    image_u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    acquisition = {
        "rotation_deg": round(math.degrees(angle), 4),
        "scale": round(float(scale), 4),
        "shift_x": round(float(shift[0]), 4),
        "shift_y": round(float(shift[1]), 4),
        "exposure_mu": round(float(mu), 4),
        "gamma": round(float(gamma), 4),
        "blur_sigma_px": round(float(blur), 4),
        "noise_std": round(float(noise_std), 5),
    }
    return image_u8, findings, acquisition


def _sides(side: str) -> tuple[int, ...]:
    # Patient's right lung is on the image's left (x < 0).
    return {"right": (-1,), "left": (1,), "bilateral": (-1, 1)}[side]


def sample_seed(seed: int, index: int) -> int:
    """The per-sample seed of sample ``index`` in a stream with global ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def sample_phantom(
    seed: int,
    size: int = 128,
    findings: Mapping[str, Mapping[str, Any] | None] | None = None,
    config: PhantomConfig = PhantomConfig(),
) -> PhantomSample:
    """One phantom chest X-ray. ``findings=None`` draws findings at ``config.prevalence``; a dict
    (possibly empty, for a normal film) fixes them. Deterministic in (seed, size, findings, config)."""
    size = _check_size(size)
    rng = np.random.default_rng(int(seed))
    spec = sample_findings(rng, config.prevalence) if findings is None else normalise_findings(findings)
    image, rendered, acquisition = render_phantom(size, spec, rng, config)
    labels = np.array([1.0 if name in rendered else 0.0 for name in CHEXPERT5], dtype=np.float32)
    return PhantomSample(
        image=image,
        labels=labels,
        findings=rendered,
        acquisition=acquisition,
        report=write_report(rendered),
        seed=int(seed),
        size=size,
    )


def phantom_features():
    import datasets

    return cxr_features(
        CHEXPERT5,
        extra={
            "report": datasets.Value("string"),
            "seed": datasets.Value("int64"),
            "findings": datasets.Value("string"),  # JSON: finding -> size, side, rendering params
        },
    )


def iter_phantom_records(
    num_samples: int,
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = PhantomConfig(),
    start: int = 0,
    split: str = "train",
) -> Iterator[dict[str, Any]]:
    """Rows of the canonical schema for samples ``start .. start + num_samples - 1``."""
    split_seed = int(np.frombuffer(split.encode().ljust(8, b"\0")[:8], dtype=np.uint64)[0] % (2**31))
    for index in range(start, start + num_samples):
        s = sample_seed(seed * 7919 + split_seed, index)
        sample = sample_phantom(s, size, None, config)
        yield {
            "image": sample.image,
            "labels": sample.label_indices,
            "patient_id": f"phantom-{split}-{index:08d}",
            "study_id": f"phantom-{split}-{index:08d}-s1",
            "view": "PA",
            "source": PHANTOM_SOURCE,
            "report": sample.report,
            "seed": s,
            "findings": json.dumps(sample.findings, sort_keys=True),
        }


def _phantom_generator(shards: list[tuple[int, int]], size: int, seed: int, config: dict, split: str):
    cfg = PhantomConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    for start, count in shards:
        yield from iter_phantom_records(count, size, seed, cfg, start, split)


def phantom_dataset(
    num_samples: int,
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = PhantomConfig(),
    split: str = "train",
    num_proc: int | None = None,
    cache_dir: str | None = None,
):
    """A ``datasets.Dataset`` of ``num_samples`` phantoms in the canonical schema plus ``report``,
    ``seed`` and ``findings``. Rows stream to the Arrow cache, so memory stays flat; ``split`` picks
    an independent stream (train / validation / test never share a sample)."""
    import datasets

    if not isinstance(num_samples, (int, np.integer)) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    _check_size(size)
    shard_len = 256
    shards = [(s, min(shard_len, num_samples - s)) for s in range(0, num_samples, shard_len)]
    return datasets.Dataset.from_generator(
        _phantom_generator,
        features=phantom_features(),
        gen_kwargs={"shards": shards, "size": int(size), "seed": int(seed), "config": asdict(config), "split": split},
        num_proc=num_proc if num_proc and len(shards) > 1 else None,
        cache_dir=cache_dir,
        split=datasets.Split.TRAIN if split == "train" else datasets.NamedSplit(split),
    )


def phantom_splits(
    sizes: Mapping[str, int],
    size: int = 128,
    seed: int = 0,
    config: PhantomConfig = PhantomConfig(),
    cache_dir: str | None = None,
):
    """A ``DatasetDict`` with one independent phantom stream per split, e.g.
    ``phantom_splits({"train": 2000, "validation": 300, "test": 500})``."""
    import datasets

    return datasets.DatasetDict(
        {name: phantom_dataset(n, size, seed, config, split=name, cache_dir=cache_dir) for name, n in sizes.items()}
    )


def render_grid(
    images: Sequence[np.ndarray | Any],
    captions: Sequence[str] | None,
    path: str | Path,
    ncols: int = 4,
    title: str | None = None,
    cell_inches: float = 2.2,
) -> Path:
    """Render images (uint8/float arrays or PIL images) with captions as a labelled PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_write_bytes

    if len(images) == 0:
        raise ValueError("render_grid needs at least one image")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions for {len(images)} images")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_inches * ncols, cell_inches * nrows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        arr = np.asarray(images[i])
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)
        if arr.ndim == 3:
            arr = arr[..., 0]
        vmax = 255 if arr.dtype == np.uint8 else 1.0
        ax.imshow(arr, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
        if captions is not None:
            ax.set_title(_wrap(captions[i], 28), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)[:4])


def finding_gallery(size: int = 128, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """One image per (finding, size, side) of the heuristic grid plus a normal film: the images and
    captions used for the phantom world's sample grid."""
    images, captions = [], []
    normal = sample_phantom(seed, size, {})
    images.append(normal.image)
    captions.append("Normal")
    for i, name in enumerate(CHEXPERT5):
        sides = FINDING_SIDES[name] or (None,)
        for size_word in SIZES:
            for side in sides:
                spec = {"size": size_word} | ({"side": side} if side else {})
                sample = sample_phantom(seed + 1 + i, size, {name: spec})
                images.append(sample.image)
                captions.append(sample.report.split(".")[0])
    return images, captions


__all__ = [
    "FINDING_SIDES",
    "PHANTOM_SOURCE",
    "PhantomConfig",
    "PhantomSample",
    "SIDES",
    "SIZES",
    "finding_gallery",
    "findings_from_text",
    "iter_phantom_records",
    "normalise_findings",
    "phantom_dataset",
    "phantom_features",
    "phantom_splits",
    "render_grid",
    "render_phantom",
    "sample_findings",
    "sample_phantom",
    "sample_seed",
    "write_report",
]
