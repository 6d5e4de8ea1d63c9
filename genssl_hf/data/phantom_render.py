"""The phantom renderer: one chest radiograph drawn analytically from anatomical primitives.

:func:`render_phantom` builds a map of X-ray attenuation on a sampling grid in normalised patient
coordinates (about -1..1 across the image, y pointing down), then exposes it as
``1 - exp(-mu * density)``. The stages, in the order they run:

1. acquisition geometry: rotation, scale and shift of the sampling grid;
2. anatomy: lung fields and hemidiaphragm heights, moved by atelectasis' volume loss;
3. soft tissue, lung air behind the heart and mediastinum, vascular markings, spine, clavicles,
   ribs and the gastric bubble;
4. the findings' opacities (effusion, atelectasis, consolidation, edema), which replace lung air;
5. exposure, blur, gamma and quantum noise.

The caller's generator is split into three independent streams (anatomy, findings, acquisition);
each stage draws from its stream in a fixed order, so the stages must keep their order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from .phantom_findings import normalise_findings

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

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> PhantomConfig:
        """A config from its JSON form (``dataclasses.asdict``, a pipeline config's ``phantom`` section):
        lists become the tuples the ranges are."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})

    def __post_init__(self):
        if not 0.0 <= self.prevalence <= 1.0:
            raise ValueError(f"prevalence must lie in [0, 1], got {self.prevalence}")


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ValueError(f"phantom size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] px, got {size!r}")
    return int(size)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return field_ / (field_.std() + 1e-6)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _soft(inside: np.ndarray, px: float) -> np.ndarray:
    """Soft indicator of ``inside > 0`` with an edge about one pixel wide (``px`` = one pixel in
    normalised units), which keeps edges resolution-independent and anti-aliased."""
    return _sigmoid(inside / px)


def _sides(side: str) -> tuple[int, ...]:
    # Patient's right lung is on the image's left (x < 0).
    return {"right": (-1,), "left": (1,), "bilateral": (-1, 1)}[side]


@dataclass(frozen=True)
class _Grid:
    """The sampling grid after the acquisition's rotation, scale and shift."""

    size: int
    px: float  # one pixel in normalised units
    x: np.ndarray
    y: np.ndarray
    ax: np.ndarray  # |x|

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, np.float32)


@dataclass
class _Thorax:
    """The patient's lungs: height, width, centre and hemidiaphragm heights (``base[-1]`` the
    patient's right, image left), and the mediastinal shift of atelectasis' volume loss."""

    lung_h: float
    lung_w: float
    lung_cx: float
    lung_cy: float
    base: dict[int, float]
    shift_med: float = 0.0


def render_phantom(
    size: int,
    findings: Mapping[str, Mapping[str, Any]],
    rng: np.random.Generator,
    config: PhantomConfig = PhantomConfig(),
    finding_maps: dict[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, dict[str, Any]], dict[str, float]]:
    """Render one phantom; returns (uint8 image, findings with rendering params, acquisition).

    ``finding_maps``, when given, receives where each present finding was drawn (read-only side
    records; the pixels and random draws are the same with or without it): ``finding_maps[name]`` is
    the finding's visible share of its peak opacity in [0, 1] (the heart's soft mask for
    Cardiomegaly) and ``finding_maps["lung_sides"]`` the two lungs' soft masks ``{-1: image left, 1:
    image right}``, from which :mod:`genssl_hf.data.phantom_dense` derives exact masks and boxes."""
    size = _check_size(size)
    findings = {k: dict(v) for k, v in normalise_findings(findings).items()}
    # Independent streams: the same seed gives the same patient and acquisition whatever the
    # findings, so a finding can be added or removed counterfactually. Each stream is drawn in
    # the order of the stages below, which must therefore keep their order.
    anat, find, acq = rng.spawn(3)

    grid, geometry = _sampling_grid(size, acq, config)
    thorax = _draw_thorax(anat)
    _volume_loss(findings, find, thorax)
    density, body = _soft_tissue(grid)
    lungs, lung_masks = _lung_fields(grid, thorax)
    parts: dict[str, np.ndarray] | None = {} if finding_maps is not None else None
    air = lungs * (1.0 - _heart_shadow(grid, thorax, findings, anat, find, parts))

    # Lung air lowers the density; vascular markings fan out from the hila.
    density -= AIR_DEFICIT * air
    density += 0.05 * _vessels(grid, anat) * air
    _add_skeleton(density, grid, thorax, body)
    # Gastric bubble under the left hemidiaphragm (image right).
    bubble = _soft(1.0 - ((grid.x - 0.42) / 0.1) ** 2 - ((grid.y - thorax.base[1] - 0.09) / 0.05) ** 2, grid.px)
    density -= 0.3 * bubble * body
    # Findings. Each replaces lung air (density toward soft tissue) inside its region.
    density += AIR_DEFICIT * _finding_opacity(findings, find, grid, thorax, lungs, lung_masks, body, parts) * air
    if finding_maps is not None:
        _record_finding_maps(finding_maps, findings, parts, air, lung_masks)

    image_u8, exposure = _expose(density, size, acq, config)
    return image_u8, findings, {**geometry, **exposure}


# The peak opacity each finding's renderer gives (Edema's is its spec's strength).
_PEAK_OPACITY = {"Pleural Effusion": 0.95, "Atelectasis": 0.7, "Consolidation": 0.85}


def _record_finding_maps(
    out: dict[str, Any],
    findings: dict[str, dict[str, Any]],
    parts: dict[str, np.ndarray],
    air: np.ndarray,
    lung_masks: dict[int, np.ndarray],
) -> None:
    """Each finding's visible share of its peak opacity: it replaces lung air, so only ``air`` shows it."""
    for name in findings:
        if name == "Cardiomegaly":
            out[name] = parts["heart"]
        else:
            peak = findings[name]["strength"] if name == "Edema" else _PEAK_OPACITY[name]
            out[name] = np.clip(parts[name] * air / peak, 0.0, 1.0)
    out["lung_sides"] = dict(lung_masks)


def _sampling_grid(size: int, acq: np.random.Generator, config: PhantomConfig) -> tuple[_Grid, dict[str, float]]:
    """Acquisition geometry: rotating/scaling the sampling grid renders the transform exactly.
    Returns the grid and the geometry part of the acquisition record."""
    px = 2.0 / size
    angle = math.radians(acq.uniform(-config.max_rotation_deg, config.max_rotation_deg))
    scale = acq.uniform(0.94, 1.06)
    shift = acq.uniform(-0.04, 0.04, size=2)
    lin = (np.arange(size, dtype=np.float32) + 0.5) * px - 1.0
    gy, gx = np.meshgrid(lin, lin, indexing="ij")
    ca, sa = math.cos(angle), math.sin(angle)
    x = (ca * gx - sa * gy) * scale + shift[0]
    y = (sa * gx + ca * gy) * scale + shift[1]
    geometry = {
        "rotation_deg": round(math.degrees(angle), 4),
        "scale": round(float(scale), 4),
        "shift_x": round(float(shift[0]), 4),
        "shift_y": round(float(shift[1]), 4),
    }
    return _Grid(size, px, x, y, np.abs(x)), geometry


def _draw_thorax(anat: np.random.Generator) -> _Thorax:
    """Anatomy variation: the lung fields and hemidiaphragm heights."""
    lung_h = anat.uniform(0.56, 0.64)
    lung_w = anat.uniform(0.25, 0.29)
    lung_cx = anat.uniform(0.37, 0.42)
    lung_cy = anat.uniform(-0.08, -0.0)
    base = {-1: anat.uniform(0.42, 0.48), 1: anat.uniform(0.48, 0.54)}  # patient right (image left) higher
    return _Thorax(lung_h, lung_w, lung_cx, lung_cy, base)


def _volume_loss(findings: dict[str, dict[str, Any]], find: np.random.Generator, thorax: _Thorax) -> None:
    """Volume loss of atelectasis raises the hemidiaphragm and pulls the mediastinum toward it."""
    if "Atelectasis" not in findings:
        return
    spec = findings["Atelectasis"]
    lift = find.uniform(0.03, 0.05) if spec["size"] == "small" else find.uniform(0.08, 0.12)
    for s in _sides(spec["side"]):
        thorax.base[s] -= lift
    if spec["side"] != "bilateral":
        thorax.shift_med = _sides(spec["side"])[0] * lift * 0.5
    spec["diaphragm_lift"] = round(float(lift), 4)


def _soft_tissue(g: _Grid) -> tuple[np.ndarray, np.ndarray]:
    """The chest wall's attenuation and the body (with the neck) mask."""
    x, y, px = g.x, g.y, g.px
    density = g.zeros()
    body = _soft(1.0 - ((x / 0.93) ** 4 + ((y - 0.12) / 1.12) ** 4), px * 4)
    neck = _soft(0.16 - g.ax, px) * _soft(-0.75 - y, px)
    body = np.maximum(body, neck)
    # Soft tissue is thicker in the middle of the chest than at its edges.
    thickness = np.sqrt(np.clip(1.0 - (x / 0.95) ** 2, 0.05, 1.0))
    density += SOFT_TISSUE * body * (0.55 + 0.45 * thickness)
    return density, body


def _lung_fields(g: _Grid, t: _Thorax) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Both lungs' soft masks (their union, and each side's)."""
    x, y, px = g.x, g.y, g.px
    lungs = g.zeros()
    lung_masks: dict[int, np.ndarray] = {}
    top = t.lung_cy - t.lung_h
    for s in (-1, 1):
        cx = s * t.lung_cx
        # Apex rounded (sqrt profile), widest near the base; the dome cuts the base and meets the
        # lateral wall in a sharp costophrenic angle.
        v = np.clip((y - top) / (t.lung_h * 0.85), 0, 1)
        lateral = 0.1 + (t.lung_cx + t.lung_w - 0.1) * v**0.38
        medial = 0.085 + 0.03 * v
        dome = t.base[s] - 0.13 * np.clip(1.0 - ((x - cx) / (t.lung_w * 1.15)) ** 2, 0, None)
        mask = (
            _soft(lateral - s * x, px * 1.5) * _soft(s * x - medial, px) * _soft(dome - y, px) * _soft(y - top, px * 2)
        )
        lung_masks[s] = mask
        lungs = np.maximum(lungs, mask)
    return lungs, lung_masks


def _heart_shadow(
    g: _Grid,
    t: _Thorax,
    findings: dict[str, dict[str, Any]],
    anat: np.random.Generator,
    find: np.random.Generator,
    parts: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Heart and mediastinum (their union), which hide the lung air behind them. The
    cardiothoracic ratio comes from the findings stream under Cardiomegaly, else from anatomy."""
    x, y, px = g.x, g.y, g.px
    # Heart: cardiothoracic ratio sets its width relative to the widest thorax.
    thorax_w = 2 * (t.lung_cx + t.lung_w)
    if "Cardiomegaly" in findings:
        spec = findings["Cardiomegaly"]
        ctr = find.uniform(0.55, 0.60) if spec["size"] == "small" else find.uniform(0.63, 0.72)
        spec["cardiothoracic_ratio"] = round(float(ctr), 4)
    else:
        ctr = anat.uniform(0.40, 0.48)
    heart_hw = ctr * thorax_w / 2
    heart_cx = 0.25 * heart_hw + t.shift_med
    heart_hh = anat.uniform(0.27, 0.32)
    heart_cy = min(t.base[-1], t.base[1]) - heart_hh + 0.16
    heart = _soft(1.0 - ((x - heart_cx) / heart_hw) ** 2 - ((y - heart_cy) / heart_hh) ** 2, px * 2)
    heart *= _soft(max(t.base[-1], t.base[1]) + 0.02 - y, px)
    mediastinum = _soft(0.11 - np.abs(x - t.shift_med), px) * _soft(heart_cy - y, px)
    if parts is not None:
        parts["heart"] = heart
    return np.maximum(heart, mediastinum)


def _vessels(g: _Grid, anat: np.random.Generator) -> np.ndarray:
    """Vascular markings fanning out from both hila."""
    vessels = g.zeros()
    for s in (-1, 1):
        r = np.hypot(g.x - s * 0.2, (g.y - 0.0) * 0.9)
        vessels += np.exp(-r / 0.22) * (0.6 + 0.4 * _smooth_noise(anat, g.shape, g.size / 64))
    return vessels


def _add_skeleton(density: np.ndarray, g: _Grid, t: _Thorax, body: np.ndarray) -> None:
    """Spine with vertebral bodies, clavicles and ribs, added to ``density`` in place."""
    x, y, ax, px = g.x, g.y, g.ax, g.px
    spine = _soft(0.065 - np.abs(x - t.shift_med * 0.3), px) * body
    vert = 0.75 + 0.25 * np.cos(2 * np.pi * (y + 1.0) / 0.115)
    density += 0.22 * spine * vert
    for s in (-1, 1):
        u = np.clip((s * x - 0.08) / 0.6, 0, 1)
        clav_y = -0.72 - 0.12 * u + 0.05 * u**2
        clav = _soft(0.022 - np.abs(y - clav_y), px) * _soft(s * x - 0.08, px) * _soft(0.68 - s * x, px)
        density += 0.15 * clav
    rib_gap = t.lung_h * 2 / 9.5
    rib_top = t.lung_cy - t.lung_h + 0.02
    ribs = g.zeros()
    for k in range(10):
        y0 = rib_top + k * rib_gap
        curve = y0 + 0.6 * (ax - 0.1) ** 2 - 0.06
        ribs += _soft(0.018 + 0.002 * k - np.abs(y - curve), px)
    density += 0.07 * np.clip(ribs, 0, 1) * _soft(ax - 0.1, px) * _soft(0.74 - ax, px) * body


def _finding_opacity(
    findings: dict[str, dict[str, Any]],
    find: np.random.Generator,
    g: _Grid,
    t: _Thorax,
    lungs: np.ndarray,
    lung_masks: dict[int, np.ndarray],
    body: np.ndarray,
    parts: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """How much of the lung air each pixel loses to the findings (the maximum over findings; each
    finding's own map goes to ``parts`` when given). The findings stream is drawn in this order:
    effusion, consolidation, edema."""
    draw = {
        "Pleural Effusion": lambda spec: _effusion(spec, find, g, t, lung_masks, body),
        "Atelectasis": lambda spec: _atelectasis(spec, g, t, lung_masks),
        "Consolidation": lambda spec: _consolidation(spec, find, g, t, lung_masks),
        "Edema": lambda spec: _edema(spec, find, g, t, lungs, lung_masks),
    }
    opacity = g.zeros()
    for name, render in draw.items():  # dicts keep insertion order: the stream order above
        if name in findings:
            own = render(findings[name])
            if parts is not None:
                parts[name] = own
            opacity = np.maximum(opacity, own)
    return opacity


def _effusion(
    spec: dict[str, Any],
    find: np.random.Generator,
    g: _Grid,
    t: _Thorax,
    lung_masks: dict[int, np.ndarray],
    body: np.ndarray,
) -> np.ndarray:
    """Basal fluid with a meniscus rising laterally into the costophrenic recess."""
    x, y, px = g.x, g.y, g.px
    frac = find.uniform(0.09, 0.15) if spec["size"] == "small" else find.uniform(0.3, 0.42)
    opacity = g.zeros()
    for s in _sides(spec["side"]):
        bottom = t.base[s]
        level = bottom - frac * 2 * t.lung_h * 0.75 - 0.22 * np.clip(s * x - t.lung_cx, 0, None) * 4 * frac
        fluid = lung_masks[s] * _soft(y - level, px * 1.5)
        # Fluid also fills the costophrenic recess below the dome laterally (blunted angle).
        recess = _soft(y - level, px) * _soft(bottom + 0.05 - y, px) * _soft(s * x - t.lung_cx, px)
        recess *= _soft(t.lung_cx + t.lung_w - s * x, px)
        opacity = np.maximum(opacity, 0.95 * np.maximum(fluid, recess * body))
    spec["fill_fraction"] = round(float(frac), 4)
    return opacity


def _atelectasis(spec: dict[str, Any], g: _Grid, t: _Thorax, lung_masks: dict[int, np.ndarray]) -> np.ndarray:
    """A plate-like (small) or wedge (big) band from the hilum to the base."""
    x, y, px = g.x, g.y, g.px
    opacity = g.zeros()
    for s in _sides(spec["side"]):
        hx, hy = s * 0.18, 0.02
        ex, ey = s * (t.lung_cx + t.lung_w * 0.7), t.base[s] - 0.08
        dx, dy = ex - hx, ey - hy
        length = math.hypot(dx, dy)
        u = np.clip(((x - hx) * dx + (y - hy) * dy) / length**2, 0, 1)
        dist = np.abs((x - hx) * dy - (y - hy) * dx) / length
        width = (0.018 + 0.012 * u) if spec["size"] == "small" else (0.02 + 0.11 * u)
        band = _soft(width - dist, px) * _soft(u - 0.15, 0.02) * lung_masks[s]
        opacity = np.maximum(opacity, 0.7 * band)
    return opacity


def _consolidation(
    spec: dict[str, Any], find: np.random.Generator, g: _Grid, t: _Thorax, lung_masks: dict[int, np.ndarray]
) -> np.ndarray:
    """Dense patchy opacity (thresholded smooth noise) with air bronchograms, one patch per side."""
    x, y = g.x, g.y
    radius = find.uniform(0.1, 0.14) if spec["size"] == "small" else find.uniform(0.2, 0.26)
    centres = []
    opacity = g.zeros()
    for s in _sides(spec["side"]):
        cx = s * (t.lung_cx + find.uniform(-0.06, 0.06))
        cy = find.uniform(0.0, 0.22)
        centres.append([round(float(cx), 3), round(float(cy), 3)])
        region = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2)))
        patchy = _soft(region + 0.35 * _smooth_noise(find, g.shape, g.size / 40) - 0.55, 0.08)
        bronchi = np.abs(_smooth_noise(find, g.shape, g.size / 30))
        air_bronchogram = 1.0 - 0.35 * _soft(0.12 - bronchi, 0.05)
        opacity = np.maximum(opacity, 0.85 * patchy * air_bronchogram * lung_masks[s])
    spec["radius"] = round(float(radius), 4)
    spec["centres"] = centres
    return opacity


def _edema(
    spec: dict[str, Any],
    find: np.random.Generator,
    g: _Grid,
    t: _Thorax,
    lungs: np.ndarray,
    lung_masks: dict[int, np.ndarray],
) -> np.ndarray:
    """Bilateral perihilar ("bat-wing") haze; big adds Kerley B lines at the bases."""
    x, y, px = g.x, g.y, g.px
    big = spec["size"] == "big"
    sigma = 0.2 if not big else 0.3
    strength = 0.35 if not big else 0.6
    haze = g.zeros()
    for s in (-1, 1):
        r2 = (x - s * 0.2) ** 2 + ((y - 0.02) / 1.2) ** 2
        haze = np.maximum(haze, np.exp(-r2 / (2 * sigma**2)) * lung_masks[s])
    haze *= 0.8 + 0.2 * _smooth_noise(find, g.shape, g.size / 50)
    if big:  # Kerley B lines: short horizontal septal lines at the lateral bases.
        kerley = g.zeros()
        for s in (-1, 1):
            for k in range(5):
                ky = t.base[s] - 0.05 - 0.035 * k
                kx = s * (t.lung_cx + t.lung_w * 0.82)
                kerley += _soft(0.006 - np.abs(y - ky), px * 0.7) * _soft(0.07 - np.abs(x - kx), px)
        haze = np.maximum(haze, 0.8 * np.clip(kerley, 0, 1) * lungs)
    spec["strength"] = strength
    return strength * haze


def _expose(
    density: np.ndarray, size: int, acq: np.random.Generator, config: PhantomConfig
) -> tuple[np.ndarray, dict[str, float]]:
    """Exposure, blur, gamma and quantum noise: the uint8 image and the rest of the acquisition record."""
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
    exposure = {
        "exposure_mu": round(float(mu), 4),
        "gamma": round(float(gamma), 4),
        "blur_sigma_px": round(float(blur), 4),
        "noise_std": round(float(noise_std), 5),
    }
    return image_u8, exposure


__all__ = ["MAX_SIZE", "MIN_SIZE", "PhantomConfig", "render_phantom"]
