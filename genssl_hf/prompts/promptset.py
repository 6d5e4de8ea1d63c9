"""``PromptSet``: an ordered, validated, versioned set of text prompts for the diffusion model.

A saved prompt set is a folder with ``prompts.json`` (metadata + prompts) and a ``README.md``
dataset card; it reloads with :meth:`PromptSet.from_pretrained`, which also accepts the names of the
sets shipped in the package (``"disease"``, ``"heuristic"``, ``"elaborated"``) and Hub dataset repo
ids. Report text never enters a prompt set: only a corpus name, its sha256 and its size.

Class labels (what the dataset engineer balances generated images over): a prompt whose
``existence`` is ``"negative"`` stands for ``"no <Disease>"`` (e.g. "Atelectasis with no lung
collapse" -> ``"no Atelectasis"``); every other prompt stands for its disease
(``"Atelectasis"``). So the disease and heuristic sets have the 5 disease classes, and the
elaborated set has up to 10 (each disease and its "no" class).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from genssl_hf.utils import atomic_dir, sha256_strings

__all__ = [
    "Prompt",
    "PromptSet",
    "EXISTENCE",
    "STRATEGIES",
    "SHIPPED_SETS",
    "SETS_DIR",
    "class_label_for",
    "BUILDER_VERSION",
]

EXISTENCE = ("positive", "negative", "unspecified")
STRATEGIES = ("disease", "heuristic", "elaborated", "custom")
VARIANTS = ("paper", "negation_aware")
SETS_DIR = Path(__file__).resolve().parent / "sets"
SHIPPED_SETS = ("disease", "heuristic", "elaborated")
FORMAT = "genssl_hf.prompt_set"
FORMAT_VERSION = 1
BUILDER_VERSION = "1.0.0"
CARD_TEMPLATE = "prompt_set"


def class_label_for(disease: str, existence: str, text: str = "") -> str:
    """The class a prompt stands for: ``"no <disease>"`` when negative, else ``<disease>``; a
    prompt that names no disease stands for itself (its ``text``). The one class-label rule of the
    package: prompt sets, the dataset writer's balance plan and generated datasets all use it."""
    if not disease:
        return text
    return f"no {disease}" if existence == "negative" else disease


def _norm_text(text: str) -> str:
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text, the disease it is about (``""``: none named, the prompt is its own
    class), whether it states the disease present / absent / neither, and the class label it
    stands for (:func:`class_label_for`). ``scores`` maps scoring variant -> psi of its feature,
    when scored. The one prompt model of the package (the dataset writer reads these too)."""

    text: str
    disease: str
    existence: str = "positive"
    strategy: str = "custom"
    class_label: str = ""
    feature: str | None = None
    feature_provenance: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"empty prompt text {self.text!r} (disease={self.disease!r})")
        if self.text != self.text.strip() or "\n" in self.text:
            object.__setattr__(self, "text", " ".join(self.text.split()))
        if not isinstance(self.disease, str):
            raise ValueError(f"prompt {self.text!r}: disease must be a string, got {self.disease!r}")
        if self.existence not in EXISTENCE:
            raise ValueError(f"prompt {self.text!r}: existence must be one of {EXISTENCE}, got {self.existence!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"prompt {self.text!r}: strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        expected = class_label_for(self.disease, self.existence, self.text)
        if not self.class_label:
            object.__setattr__(self, "class_label", expected)
        elif self.class_label != expected:
            raise ValueError(
                f"prompt {self.text!r}: class_label {self.class_label!r} breaks the rule "
                f"(disease {self.disease!r}, existence {self.existence!r} -> {expected!r})"
            )
        if self.scores is not None:
            bad = set(self.scores) - set(VARIANTS)
            if bad:
                raise ValueError(f"prompt {self.text!r}: unknown score variants {sorted(bad)}; known {VARIANTS}")
            object.__setattr__(self, "scores", {k: float(v) for k, v in self.scores.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, str]:
        """The fields that decide what a prompt generates and which class it counts for (what a
        generated dataset's config records and its prompt-set hash covers)."""
        return {
            "text": self.text,
            "disease": self.disease,
            "existence": self.existence,
            "class_label": self.class_label,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Prompt":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"prompt entry has unknown keys {sorted(unknown)}: {dict(d)!r:.120}")
        return cls(**dict(d))


class PromptSet(Sequence[Prompt]):
    """An ordered set of :class:`Prompt` with set-level metadata.

    ``metadata`` holds at least ``strategy`` and ``builder_version``; scored sets also carry
    ``corpus`` ({name, sha256, num_reports}), ``threshold``, ``variant`` and ``scoring``.
    """

    def __init__(
        self, prompts: Iterable[Prompt | Mapping[str, Any] | str], *, strategy: str = "custom", **metadata: Any
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        items: list[Prompt] = []
        for i, p in enumerate(prompts):
            if isinstance(p, Prompt):
                items.append(p)
            elif isinstance(p, Mapping):
                items.append(Prompt.from_dict(p))
            elif isinstance(p, str):
                items.append(Prompt(text=p, disease=p, existence="unspecified", strategy=strategy))
            else:
                raise TypeError(f"prompt {i} is {type(p).__name__}; expected Prompt, dict or str")
        if not items:
            raise ValueError("a prompt set needs at least one prompt")
        seen: dict[str, int] = {}
        for i, p in enumerate(items):
            key = _norm_text(p.text)
            if key in seen:
                raise ValueError(
                    f"prompt {i} duplicates prompt {seen[key]} ({p.text!r}): duplicate prompt texts are "
                    "compared case- and whitespace-insensitively"
                )
            seen[key] = i
        threshold = metadata.get("threshold")
        if threshold is not None:
            _check_threshold(threshold)
        variant = metadata.get("variant")
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        corpus = metadata.get("corpus")
        if corpus is not None:
            if not isinstance(corpus, Mapping) or set(corpus) - {"name", "sha256", "num_reports", "column"}:
                raise ValueError(
                    f"corpus metadata may hold only name, sha256, num_reports, column; got {corpus!r:.200}"
                )
        self._prompts = items
        self.metadata: dict[str, Any] = {"strategy": strategy, "builder_version": BUILDER_VERSION, **metadata}

    # -- sequence protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._prompts)

    def __getitem__(self, i):  # type: ignore[override]
        return self._prompts[i]

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self._prompts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PromptSet) and self._prompts == other._prompts and self.metadata == other.metadata

    def __repr__(self) -> str:
        return f"PromptSet(strategy={self.strategy!r}, n={len(self)}, classes={len(self.class_labels)})"

    @property
    def strategy(self) -> str:
        return self.metadata["strategy"]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self._prompts]

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        return tuple(self._prompts)

    @property
    def name(self) -> str:
        """The set's name (``metadata["name"]``), else its strategy."""
        return str(self.metadata.get("name") or self.strategy)

    @property
    def diseases(self) -> list[str]:
        """Distinct named diseases in order of first appearance (the multi-label columns of a
        dataset generated from this set)."""
        return list(dict.fromkeys(p.disease for p in self._prompts if p.disease))

    @property
    def content_hash(self) -> str:
        """SHA-256 over every prompt's :meth:`Prompt.identity`, order-sensitive: names what a
        dataset generated from this set depends on."""
        return sha256_strings(json.dumps(p.identity(), sort_keys=True) for p in self._prompts)

    @property
    def source_hash(self) -> str | None:
        """The hash the set was published under (``metadata["source_hash"]`` when it was read
        from a file that states one), else its :attr:`fingerprint`."""
        return self.metadata.get("source_hash", self.fingerprint)

    @property
    def class_labels(self) -> list[str]:
        """Distinct class labels in order of first appearance."""
        return list(dict.fromkeys(p.class_label for p in self._prompts))

    class_names = class_labels  # the ``datasets.ClassLabel`` word, as the dataset writer says it

    def by_class(self) -> dict[str, list[Prompt]]:
        out: dict[str, list[Prompt]] = {c: [] for c in self.class_labels}
        for p in self._prompts:
            out[p.class_label].append(p)
        return out

    @property
    def fingerprint(self) -> str:
        """sha256 over the ordered prompt texts: names this exact prompt list."""
        return sha256_strings(self.texts)

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metadata": {
                **self.metadata,
                "num_prompts": len(self),
                "class_labels": self.class_labels,
                "fingerprint": self.fingerprint,
            },
            "prompts": [p.to_dict() for p in self._prompts],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | list) -> "PromptSet":
        """A prompt set from its saved dict, or from the simpler layouts the generator's prompt
        loader also reads: a plain list of prompts (dicts or strings), or ``{"prompts": [...]}``."""
        if isinstance(d, list):
            return cls(d, strategy="custom")
        if not isinstance(d, Mapping):
            raise ValueError(f"a prompt set is a JSON object or a list of prompts, got {type(d).__name__}")
        if "format" not in d and isinstance(d.get("prompts"), list):
            meta = {
                k: v
                for k, v in dict(d.get("metadata", {})).items()
                if k not in ("num_prompts", "class_labels", "fingerprint")
            }
            strategy = meta.pop("strategy", "custom")
            return cls(d["prompts"], strategy=strategy, **meta)
        if d.get("format") != FORMAT:
            raise ValueError(f"not a prompt set: format is {d.get('format')!r}, expected {FORMAT!r}")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(
                f"prompt set format_version {d['format_version']} "
                f"is newer than this genssl_hf supports ({FORMAT_VERSION})"
            )
        meta = dict(d.get("metadata", {}))
        for derived in ("num_prompts", "class_labels", "fingerprint"):
            meta.pop(derived, None)
        strategy = meta.pop("strategy", "custom")
        ps = cls([Prompt.from_dict(p) for p in d.get("prompts", [])], strategy=strategy, **meta)
        return ps

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def render_card(self):
        """The README card (a ``huggingface_hub.DatasetCard``) rendered from ``model_cards/prompt_set.md``."""
        from genssl_hf.core.cards import render_dataset_card

        meta = self.metadata
        scored = any(p.scores for p in self._prompts)
        card_data = {
            "license": "apache-2.0",
            "language": ["en"],
            "pretty_name": f"GEN-SSL {self.strategy} prompt set",
            "tags": ["genssl_hf", "prompt-set", "chest-x-ray", "text-to-image", "medical-imaging"],
            "task_categories": ["text-to-image"],
            "size_categories": ["n<1K"],
        }
        return render_dataset_card(
            CARD_TEMPLATE,
            card_data,
            ps=self,
            meta=meta,
            prompts=self._prompts,
            scored=scored,
            class_counts={c: len(v) for c, v in self.by_class().items()},
            fingerprint=self.fingerprint,
        )

    def save_pretrained(self, save_directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``prompts.json`` and ``README.md`` atomically into ``save_directory``."""
        card = self.render_card()  # rendered before anything is written
        payload = self.to_json()
        with atomic_dir(save_directory, overwrite=overwrite) as tmp:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a saved set is meant to be shared
            (tmp / "prompts.json").write_text(payload, encoding="utf-8")
            card.save(tmp / "README.md")
        return Path(save_directory)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, revision: str | None = None, token: str | None = None
    ) -> "PromptSet":
        """Load a saved folder, a shipped set name (``disease``, ``heuristic``, ``elaborated``) or a
        Hub dataset repo id (``org/name``)."""
        path = Path(name_or_path)
        if not (path / "prompts.json").is_file():
            if str(name_or_path) in SHIPPED_SETS:
                path = SETS_DIR / str(name_or_path)
                if not (path / "prompts.json").is_file():
                    raise FileNotFoundError(f"shipped prompt set {name_or_path!r} is missing from the package ({path})")
            elif path.exists():
                raise FileNotFoundError(f"{path} has no prompts.json; is it a saved prompt set?")
            elif re.fullmatch(r"[\w.-]+/[\w.-]+", str(name_or_path)):
                from huggingface_hub import snapshot_download

                try:
                    path = Path(
                        snapshot_download(
                            str(name_or_path),
                            repo_type="dataset",
                            revision=revision,
                            token=token,
                            allow_patterns=["prompts.json", "README.md"],
                        )
                    )
                except Exception as e:  # noqa: BLE001 - offline, missing repo, auth: say what was tried
                    raise FileNotFoundError(
                        f"no local folder {name_or_path!r}, and fetching it as a Hub dataset repo failed: "
                        f"{type(e).__name__}: {e}"
                    ) from e
            else:
                raise FileNotFoundError(
                    f"no prompt set at {name_or_path!r}: not a folder with prompts.json, not one of the "
                    f"shipped sets {SHIPPED_SETS}, not a Hub repo id"
                )
        with open(path / "prompts.json", encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path / 'prompts.json'} is not valid JSON: {e}") from e
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:  # name the file the bad entry came from
            raise ValueError(f"{path / 'prompts.json'}: {e}") from e

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = True,
        token: str | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
    ):
        """Create (if needed) a dataset repo and upload the saved folder; private by default.
        Returns the ``CommitInfo`` of the upload."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="genssl-prompts-") as tmp:
            folder = self.save_pretrained(Path(tmp) / "prompt_set")
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            return api.upload_folder(
                folder_path=str(folder),
                repo_id=repo_id,
                repo_type="dataset",
                revision=revision,
                commit_message=commit_message or f"Upload {self.strategy} prompt set ({len(self)} prompts)",
            )

    def to_dataset(self):
        """The prompts as a ``datasets.Dataset`` (``class_label`` is a ``ClassLabel``); the set
        metadata is kept as JSON in ``info.description``."""
        import datasets

        names = self.class_labels
        feats = datasets.Features(
            {
                "text": datasets.Value("string"),
                "disease": datasets.Value("string"),
                "existence": datasets.Value("string"),
                "strategy": datasets.Value("string"),
                "class_label": datasets.ClassLabel(names=names),
                "feature": datasets.Value("string"),
                "feature_provenance": datasets.Value("string"),
                "score_paper": datasets.Value("float64"),
                "score_negation_aware": datasets.Value("float64"),
            }
        )
        cols: dict[str, list] = {k: [] for k in feats}
        for p in self._prompts:
            cols["text"].append(p.text)
            cols["disease"].append(p.disease)
            cols["existence"].append(p.existence)
            cols["strategy"].append(p.strategy)
            cols["class_label"].append(names.index(p.class_label))
            cols["feature"].append(p.feature)
            cols["feature_provenance"].append(p.feature_provenance)
            cols["score_paper"].append(None if not p.scores else p.scores.get("paper"))
            cols["score_negation_aware"].append(None if not p.scores else p.scores.get("negation_aware"))
        info = datasets.DatasetInfo(
            description=json.dumps(self.to_dict()["metadata"], sort_keys=True, default=str), features=feats
        )
        return datasets.Dataset.from_dict(cols, features=feats, info=info)


def _check_threshold(threshold: Any) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}") from None
    if not (0.0 <= t <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return t
