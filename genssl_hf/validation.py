"""Argument and config validation shared by every script and the pipeline (ground floor: no
imports from the rest of the package).

Numeric command-line options
    Every ``int`` / ``float`` option of every parser has a declared range, in one table
    (:data:`NUMERIC_RANGES`, by option name, with per-parser overrides). :func:`checked_parser`
    wraps each numeric option's ``type`` so that ``--num_train_epochs -3`` stops argparse with
    ``argument --num_train_epochs: must be > 0, got -3`` before any work starts, and refuses NaN
    and infinities everywhere. A numeric option without a declared range is a programming error
    raised when the parser is built (the test suite builds every parser), so a new option cannot
    slip through unchecked. :func:`check_namespace` applies the same ranges to a namespace built
    in code (``pretrain_mae(argparse.Namespace(...))``).

Option dictionaries
    :func:`check_options` checks a ``{"option_name": value}`` dict (the pipeline's
    ``pretrain.args``) against a parser without running anything: unknown names get "did you
    mean" suggestions (difflib), values go through the option's own type, range and choices.

Renamed options
    The training and evaluation entry points speak transformers' vocabulary (``--output_dir``,
    ``--per_device_train_batch_size``, ``--learning_rate``, ``--max_steps``, ...). An option that
    was renamed stays registered, hidden, by :func:`renamed_options`: given on a command line it
    stops argparse with ``--blr was renamed: use --base_learning_rate`` before any
    work, and :func:`check_options` says the same of a config key. An option argparse does not
    know at all gets the closest known ones suggested (difflib).
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
from typing import Any, Callable, Iterable, Mapping

__all__ = [
    "NUMERIC_RANGES",
    "Range",
    "check_number",
    "checked_parser",
    "check_namespace",
    "check_options",
    "did_you_mean",
    "renamed_options",
    "suggest_close_options",
]

# option name -> range. Grammar: ">0", ">=1", "<=5", "[0,1]", "(0,1)", "[0,1)", "(0,1]", "any" (finite).
NUMERIC_RANGES: dict[str, str] = {
    # shared run options (training.args)
    "seed": "[0,4294967295]",  # numpy and torch seeders take 32-bit seeds (10**22 overflowed in torch)
    "gradient_accumulation_steps": ">=1",
    "checkpointing_steps": ">=0",
    "checkpoints_total_limit": ">=0",
    "logging_steps": ">=1",
    # sizes and counts
    "image_size": ">=1",
    "patch_size": ">=1",
    "load_size": ">=1",
    "resolution": ">=1",
    "height": ">=1",
    "width": ">=1",
    "phantom_resolution": ">=1",
    "phantom_size": ">=1",
    "phantom_sizes": ">=1",
    "max_train_samples": ">=1",
    "max_samples": ">=1",
    "num_workers": ">=0",
    "num_threads": ">=1",
    "num_processes": ">=1",
    "stage_workers": ">=1",
    "stage_threads": ">=1",
    "per_device_train_batch_size": ">=1",
    "batch_size": ">=1",
    "total_batch_size": ">=1",
    "per_device_eval_batch_size": ">=1",
    "num_images": ">=1",
    "num_inference_steps": ">=1",
    "steps": ">=1",
    "rows_per_checkpoint": ">=1",
    "max_images_this_run": ">=1",
    "figure_samples": ">=1",
    "stop_after_steps": ">=1",
    "max_steps": ">=1",
    "min_steps": ">=0",
    "warmup_steps": ">=0",
    "adv_start_step": ">=0",
    "n_bootstrap": ">=0",
    "robustness_max_samples": ">=1",
    "attention": ">=0",
    "quality_max_images": ">=1",
    "disc_channels": ">=1",
    "disc_layers": ">=1",
    "max_text_length": ">=1",
    "scale_factor_batches": ">=1",
    "num_validation_images": ">=0",
    "validation_steps": ">=0",
    "llm_max_new_tokens": ">=1",
    "randaug_n": ">=0",
    "severities": "[1,5]",
    "max_images": ">=1",
    "sample_size": ">=1",
    "size": ">=1",
    "calibration_bins": ">=2",
    # durations and rates
    "num_train_epochs": ">0",
    "warmup_epochs": ">=0",
    "eval_every_epochs": ">0",
    "max_train_minutes": ">0",
    "learning_rate": ">0",
    "base_learning_rate": ">0",
    "disc_learning_rate": ">0",
    "warmup_ratio": "[0,1]",
    "min_lr_ratio": "[0,1]",
    "weight_decay": ">=0",
    "adam_beta2": "[0,1)",
    "max_grad_norm": ">=0",
    "layer_decay": "(0,1]",
    "drop_path": "[0,1)",
    "label_smoothing": "[0,1)",
    # fractions, probabilities, weights
    "mask_ratio": "(0,1)",
    "crop_scale_min": "(0,1]",
    "crop_scale": "(0,1]",
    "val_fraction": "(0,1)",
    "label_fraction": "(0,1]",
    "validation_fraction": "(0,1)",
    "test_fraction": "(0,1)",
    "target_sensitivity": "(0,1]",
    "hflip": "[0,1]",
    "rotation": "[0,180]",
    "randaug_m": ">=0",
    "threshold": "[0,1]",
    "prompt_dropout": "[0,1]",
    "drop_negative_sentences": "[0,1]",
    "kl_weight": ">=0",
    "adv_weight": ">=0",
    "perceptual_weight": ">=0",
    "guidance_scale": ">=0",
    "guidance": ">=0",
    "scale_factor": ">0",
    # AdaIN targets and normalisation
    "adain_mean": "any",
    "adain_std": ">0",
    "image_mean": "any",
    "image_std": ">0",
    # frozen-feature probing (evaluation.frozen_features)
    "fractions": "(0,1]",
    "seeds": "[0,4294967295]",
    "knn_k": ">=1",
    "knn_temperature": ">0",
    "c_grid": ">0",
    "layer": ">=-1",
}

_RANGE = re.compile(r"^\s*([\[(])\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*([\])])\s*$")
_BOUND = re.compile(r"^\s*(>=|>|<=|<)\s*([-+0-9.eE]+)\s*$")


class Range:
    """A closed, open or half-open interval of finite numbers (see :data:`NUMERIC_RANGES`)."""

    def __init__(self, spec: str):
        self.spec = spec
        self.lo, self.hi, self.lo_closed, self.hi_closed = -math.inf, math.inf, False, False
        m, b = _RANGE.match(spec), _BOUND.match(spec)
        if m:
            self.lo_closed, self.lo, self.hi, self.hi_closed = m[1] == "[", float(m[2]), float(m[3]), m[4] == "]"
        elif b:
            op, value = b[1], float(b[2])
            if op.startswith(">"):
                self.lo, self.lo_closed = value, op == ">="
            else:
                self.hi, self.hi_closed = value, op == "<="
        elif spec.strip() != "any":
            raise ValueError(f"bad range spec {spec!r}")

    def problem(self, value: float) -> str | None:
        """Why ``value`` is outside the range, or None."""
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if value < self.lo or (value == self.lo and not self.lo_closed):
            return f"must be {self.describe()}, got {value:g}"
        if value > self.hi or (value == self.hi and not self.hi_closed):
            return f"must be {self.describe()}, got {value:g}"
        return None

    def describe(self) -> str:
        if math.isinf(self.lo) and math.isinf(self.hi):
            return "a finite number"
        if math.isinf(self.hi):
            return f"{'>=' if self.lo_closed else '>'} {self.lo:g}"
        if math.isinf(self.lo):
            return f"{'<=' if self.hi_closed else '<'} {self.hi:g}"
        return f"in {'[' if self.lo_closed else '('}{self.lo:g}, {self.hi:g}{']' if self.hi_closed else ')'}"


def check_number(value: Any, spec: str, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``value`` is not a number inside ``spec``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    problem = Range(spec).problem(float(value))
    if problem:
        raise ValueError(f"{name} {problem}")


def _is_numeric(action: argparse.Action) -> bool:
    return action.type in (int, float) or getattr(action.type, "genssl_range", None) is not None


def _ranged_type(base: Callable[[str], Any], rng: Range) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        value = base(text)  # argparse turns this ValueError into "invalid int value"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            problem = rng.problem(float(value))
            if problem:
                raise argparse.ArgumentTypeError(problem)
        return value

    convert.__name__ = getattr(base, "__name__", "number")  # argparse's "invalid <name> value" message
    convert.genssl_range = rng  # type: ignore[attr-defined]
    convert.genssl_base = base  # type: ignore[attr-defined]
    return convert


def checked_parser(parser: argparse.ArgumentParser, ranges: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Give every numeric option of ``parser`` its range (``ranges`` overrides the shared table);
    returns ``parser``. Raises ``TypeError`` for a numeric option with no declared range."""
    table = {**NUMERIC_RANGES, **(ranges or {})}
    undeclared = []
    for action in parser._actions:
        if not _is_numeric(action) or getattr(action.type, "genssl_range", None) is not None:
            continue
        if action.dest not in table:
            undeclared.append(action.option_strings[0] if action.option_strings else action.dest)
            continue
        action.type = _ranged_type(action.type, Range(table[action.dest]))
    if undeclared:
        raise TypeError(
            f"{parser.prog}: numeric option(s) {undeclared} have no declared range; "
            "add them to genssl_hf.validation.NUMERIC_RANGES or pass ranges="
        )
    return suggest_close_options(parser)


def check_scale_range(values: Any, option: str) -> None:
    """A (min, max) area-scale pair of a random resized crop: ``0 < min <= max <= 1``."""
    if values is None:
        return
    if len(values) != 2:
        raise ValueError(f"{option} takes two numbers (min max), got {list(values)}")
    lo, hi = (float(v) for v in values)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"{option} {lo:g} {hi:g}: needs 0 < min <= max <= 1 (the kept image area, e.g. 0.5 1.0)")


def check_namespace(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check an already-built namespace against the ranges of ``parser``'s numeric options (for
    namespaces made in code, which never went through argparse)."""
    problems = []
    for action in parser._actions:
        rng = getattr(action.type, "genssl_range", None)
        value = getattr(args, action.dest, None)
        if rng is None or value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                problems.append(f"{_flag(action)} must be a number, got {v!r}")
            elif rng.problem(float(v)):
                problems.append(f"{_flag(action)} {rng.problem(float(v))}")
    if problems:
        raise ValueError("; ".join(problems))


def _flag(action: argparse.Action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def did_you_mean(name: str, known: Iterable[str], suggest: Mapping[str, str] | None = None) -> str:
    """`` (did you mean 'x'?)`` for the closest known names, or ``""``. ``suggest`` maps a known
    name to the one to suggest instead (a renamed option's old name to its new one)."""
    suggest = suggest or {}
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(suggest.get(c, c) for c in close))
    if not suggestions:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in suggestions) + "?)"


class _RenamedOption(argparse.Action):
    """A hidden option that was renamed: given on a command line it stops argparse, before any
    work, with the new name (its values, if any, are swallowed with it)."""

    def __init__(self, option_strings, dest, new_option: str, **kwargs):
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, nargs="*", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        self.new_option = new_option

    def message(self, used: str | None = None) -> str:
        return f"{used or self.option_strings[0]} was renamed: use {self.new_option}"

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(self.message(option_string))


def renamed_options(parser: argparse.ArgumentParser, renamed: Mapping[str, str]) -> argparse.ArgumentParser:
    """Register each ``{"--old": "--new"}`` as a hidden option whose use is an argparse error
    naming the new option (``--blr was renamed: use --base_learning_rate``); also makes the
    parser suggest close option names for options it does not know. Returns ``parser``."""
    for old, new in renamed.items():
        parser.add_argument(old, action=_RenamedOption, new_option=new)
    suggest_close_options(parser)
    return parser


def _option_suggestions(parser: argparse.ArgumentParser, dashes: bool) -> dict[str, str]:
    """Long option names of ``parser`` (without the dashes) -> the name to suggest: itself, or
    the new name of a renamed option."""
    table: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        for s in action.option_strings:
            if s.startswith("--"):
                target = action.new_option if isinstance(action, _RenamedOption) else s
                table[s[2:]] = target if dashes else target[2:]
    return table


def suggest_close_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make argparse's "unrecognized arguments" error name the closest known options (difflib)."""
    if getattr(parser, "_genssl_suggests", False):
        return parser
    plain_error = parser.error

    def error(message: str):
        m = re.match(r"unrecognized arguments: (.*)$", message, re.S)
        if m:
            table = _option_suggestions(parser, dashes=True)
            hints = []
            for token in m[1].split():
                if token.startswith("--"):
                    name = token.split("=", 1)[0]
                    hint = did_you_mean(name[2:], table, table)
                    if hint:
                        hints.append(name + hint)
            if hints:
                message += "; " + "; ".join(hints)
        plain_error(message)

    parser.error = error  # type: ignore[method-assign]
    parser._genssl_suggests = True  # type: ignore[attr-defined]
    return parser


def check_options(
    parser: argparse.ArgumentParser, options: Mapping[str, Any], where: str, what: str | None = None
) -> list[str]:
    """Problems (empty when fine) of ``{"option_name": value}`` meant for ``parser`` as
    ``--option_name value`` flags (``True`` = a bare flag, lists = several values, ``None`` /
    ``False`` = left out). Nothing is run: names, types, ranges and choices only."""
    by_flag = {s: a for a in parser._actions for s in a.option_strings}
    problems: list[str] = []
    for key, value in options.items():
        flag = "--" + str(key)
        action = by_flag.get(flag)
        if action is None or isinstance(action, argparse._HelpAction):
            known = _option_suggestions(parser, dashes=False)
            problems.append(
                f"{where}.{key}: unknown option of {what or parser.prog}{did_you_mean(str(key), known, known)}"
            )
            continue
        if isinstance(action, _RenamedOption):
            problems.append(f"{where}.{key}: renamed: use {action.new_option[2:]}")
            continue
        if value is None or value is False:
            continue
        if action.nargs == 0 or (action.nargs == "?" and action.const is True):  # a switch (typed: bool)
            if value is not True:
                problems.append(f"{where}.{key}: a switch; give true or leave it out, got {value!r}")
            continue
        if value is True:
            problems.append(f"{where}.{key}: needs a value, got true")
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        many = action.nargs in ("*", "+") or isinstance(action.nargs, int) or isinstance(action, argparse._AppendAction)
        if len(values) != 1 and not many:
            problems.append(f"{where}.{key}: takes one value, got {value!r}")
            continue
        if isinstance(action.nargs, int) and len(values) != action.nargs:
            problems.append(f"{where}.{key}: takes {action.nargs} values, got {value!r}")
            continue
        for v in values:
            try:
                converted = action.type(str(v)) if action.type is not None else str(v)
            except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
                kind = getattr(getattr(action.type, "genssl_base", action.type), "__name__", "value")
                reason = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else f"not a valid {kind}: {v!r}"
                problems.append(f"{where}.{key}: {reason}")
                continue
            if action.choices is not None and converted not in action.choices:
                problems.append(f"{where}.{key}: {v!r} is not one of {list(action.choices)}")
    return problems


def check_weight_files(folder: str | "os.PathLike[str]", what: str, depth: int = 2) -> None:
    """Open the header of every ``*.safetensors`` file in ``folder`` (and its sub-folders, for
    pipeline folders), so that a truncated or garbage weight file fails now, naming the option
    and the file, instead of deep inside ``from_pretrained`` ("header too large"). A folder only;
    preset names and Hub ids are left to their loaders. Its ``*.json`` files (config.json,
    preprocessor_config.json, ...) must parse, for the same reason."""
    import os
    from pathlib import Path

    root = Path(os.fspath(folder))
    if not root.is_dir():
        return
    files = [p for level in range(depth + 1) for p in root.glob("/".join(["*"] * level + ["*.safetensors"]))]
    for path in sorted(files):
        size = path.stat().st_size
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
            header_len = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < header_len <= size - 8:
                raise ValueError(f"header length {header_len} does not fit a file of {size} bytes")
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:  # parses the header, checks the data offsets
                f.keys()
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(
                f"{what} {root}: weight file {path} is not a readable safetensors file "
                f"({type(exc).__name__}: {exc}); re-download or re-save it"
            ) from None
    for path in sorted(p for level in range(depth + 1) for p in root.glob("/".join(["*"] * level + ["*.json"]))):
        import json

        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(
                f"{what} {root}: {path.name} is not valid JSON ({exc}); re-download or re-save it"
            ) from None
