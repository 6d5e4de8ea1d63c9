"""Ask an LLM the paper's question and turn its answer into candidate visual features.

Two backends, one interface (:class:`FeatureLLM`):

- :class:`TransformersFeatureLLM`: any ``transformers`` causal LM (a local folder, or a Hub id when
  online); greedy decoding by default; the chat template is used when the tokenizer has one.
- :class:`OpenAIFeatureLLM`: any OpenAI-compatible server (``POST {endpoint}/v1/chat/completions``:
  vLLM, llama.cpp, TGI, Ollama, OpenAI ...), through the standard library only.

Answers are cached on disk as JSON, keyed by sha256 of (backend, model id, prompt, generation
settings), so a rerun reads the same answer and the build is reproducible; ``refresh=True`` asks
again. The model id is the name or path you pass: if you replace the weights behind the same
path or served name, pass ``refresh=True`` (or another ``cache_dir``). The cache folder defaults
to ``$GENSSL_HF_CACHE/llm_answers`` (``~/.cache/genssl_hf``).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from genssl_hf.utils import atomic_write_text, sha256_bytes

from .report_tokens import _fold

__all__ = [
    "QUESTION",
    "FeatureLLM",
    "TransformersFeatureLLM",
    "OpenAIFeatureLLM",
    "parse_features",
    "dedupe_features",
    "feature_key",
    "default_cache_dir",
]

QUESTION = "What medical visual feature is most necessary to diagnose {disease} in chest x-ray?"
MAX_FEATURE_WORDS = 8

_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2013+>]+|\(?\d{1,2}[.)]|\(?[a-zA-Z][.)](?=\s))\s*")
_LEAD_IN = re.compile(
    r"^(?:the\s+)?(?:most\s+)?(?:(?:necessary|important|key|common|main|typical)\s+)?"
    r"(?:medical\s+)?(?:visual\s+)?(?:features?|findings?|signs?)\s+(?:is|are|include|includes|would be)\s*:?\s*",
    re.I,
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("GENSSL_HF_CACHE", Path.home() / ".cache" / "genssl_hf")) / "llm_answers"


def feature_key(feature: str) -> str:
    """De-duplication key: lower case, words only, whitespace collapsed, plurals folded."""
    words = re.findall(r"\w+", feature.lower())
    return " ".join(_fold(w) for w in words if w not in {"a", "an", "the"})


def _clean(item: str) -> str:
    item = item.replace("**", "").replace("__", "").replace("`", "").strip()
    item = _LEAD_IN.sub("", item)
    item = re.sub(r"^(?:a|an|the)\s+", "", item, flags=re.I)
    item = re.sub(r"\s*\([^)]*\)\s*$", "", item)  # trailing "(explanation)"
    item = item.strip(" \t.;:,!?\"'")
    return " ".join(item.split())


def parse_features(answer: str) -> list[str]:
    """Split an LLM answer into features: one per bullet or numbered line (other lines are then
    ignored as prose; an answer without list lines is read line by line), comma/semicolon lists
    split further; "Name: explanation" and "Name - explanation" keep the name; items longer than
    ``MAX_FEATURE_WORDS`` words are dropped. Returns them de-duplicated, in order."""
    out: list[str] = []
    lines = [ln.strip() for ln in answer.splitlines() if ln.strip()]
    bullets = [ln for ln in lines if _BULLET.match(ln) and _BULLET.match(ln).group(0)]
    # A list answer: its items are the features; lead-in and closing prose lines are not.
    for line in bullets or lines:
        line = _BULLET.sub("", line)
        line = line.replace("**", "")
        if ":" in line:
            head, tail = line.split(":", 1)
            # "Blunting of the angles: fluid collects..." -> the head; "Features: a, b" -> the tail
            line = (
                tail
                if (_LEAD_IN.match(head + " is") or not head.strip() or len(head.split()) > MAX_FEATURE_WORDS)
                else head
            )
        line = re.sub(r"\s+-\s+.*$", "", line)  # "feature - explanation"
        parts = re.split(r"[,;]|\s+and\s+(?=[^,;]*$)", line) if ("," in line or ";" in line) else [line]
        parts = [q for part in parts for q in re.split(r"\s*\.\s+", part)]  # sentences
        for part in parts:
            feat = _clean(re.sub(r"^\s*(?:and|or)\s+", "", part))
            if feat and len(feat.split()) <= MAX_FEATURE_WORDS and re.search(r"[A-Za-z]", feat):
                out.append(feat)
    return dedupe_features(out)


def dedupe_features(features: list[str]) -> list[str]:
    """Keep the first of features equal up to case, whitespace, articles and plurals."""
    seen: set[str] = set()
    out = []
    for f in features:
        k = feature_key(f)
        if k and k not in seen:
            seen.add(k)
            out.append(" ".join(f.split()))
    return out


class FeatureLLM:
    """Base class: builds the question, caches answers, parses features. Subclasses implement
    :meth:`_generate` and set ``backend``, ``model_id`` and ``settings``."""

    backend = "base"

    def __init__(
        self,
        model_id: str,
        settings: dict[str, Any],
        cache_dir: str | os.PathLike | None = None,
        question: str = QUESTION,
    ):
        if "{disease}" not in question:
            raise ValueError(f"the question template must contain '{{disease}}': {question!r}")
        self.model_id = model_id
        self.settings = dict(settings)
        self.question = question
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.calls = 0  # real generations (cache misses)

    def prompt(self, disease: str) -> str:
        return self.question.format(disease=disease)

    def cache_key(self, prompt: str) -> str:
        blob = json.dumps(
            {"backend": self.backend, "model": self.model_id, "prompt": prompt, "settings": self.settings},
            sort_keys=True,
        )
        return sha256_bytes(blob.encode("utf-8"))

    def ask(self, disease: str, *, refresh: bool = False) -> str:
        """The raw answer for ``disease`` (from the cache when present)."""
        prompt = self.prompt(disease)
        path = self.cache_dir / f"{self.cache_key(prompt)}.json"
        if path.is_file() and not refresh:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)["answer"]
        answer = self._generate(prompt)
        self.calls += 1
        if not isinstance(answer, str):
            raise TypeError(f"{self.backend} backend returned {type(answer).__name__}, not text")
        record = {
            "backend": self.backend,
            "model": self.model_id,
            "prompt": prompt,
            "settings": self.settings,
            "answer": answer,
        }
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return answer

    def features(self, disease: str, *, refresh: bool = False) -> list[str]:
        """Parsed, de-duplicated features from the answer for ``disease``."""
        return parse_features(self.ask(disease, refresh=refresh))

    def _generate(self, prompt: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class TransformersFeatureLLM(FeatureLLM):
    """A ``transformers`` causal LM. ``model``: a folder or a Hub id, or an already built
    ``(model, tokenizer)`` pair with ``model_id`` naming it for the cache."""

    backend = "transformers"

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        model_id: str | None = None,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        seed: int = 0,
        device: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        question: str = QUESTION,
    ):
        if isinstance(model, (str, os.PathLike)):
            model_id = model_id or str(model)
        elif model_id is None:
            raise ValueError("pass model_id= to name an in-memory model (it keys the answer cache)")
        settings = {"max_new_tokens": int(max_new_tokens), "do_sample": bool(do_sample), "seed": int(seed)}
        if do_sample:
            settings["temperature"] = float(temperature)
        super().__init__(model_id, settings, cache_dir=cache_dir, question=question)
        self._model_arg, self._tokenizer, self._device = model, tokenizer, device
        self._model = None if isinstance(model, (str, os.PathLike)) else model

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            src = str(self._model_arg)
            self._tokenizer = self._tokenizer or AutoTokenizer.from_pretrained(src)
            self._model = AutoModelForCausalLM.from_pretrained(src)
        if self._tokenizer is None:
            raise ValueError("an in-memory model needs tokenizer=")
        if self._device:
            self._model.to(self._device)
        self._model.eval()
        return self._model, self._tokenizer

    def _generate(self, prompt: str) -> str:
        import torch

        model, tok = self._load()
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt + "\n"
        enc = tok(text, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        torch.manual_seed(self.settings["seed"])
        kwargs = dict(max_new_tokens=self.settings["max_new_tokens"], do_sample=self.settings["do_sample"])
        if self.settings["do_sample"]:
            kwargs["temperature"] = self.settings["temperature"]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if pad is not None:
            kwargs["pad_token_id"] = pad
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


class OpenAIFeatureLLM(FeatureLLM):
    """An OpenAI-compatible chat completions server. ``endpoint``: the base URL
    (``http://host:port`` or ``.../v1``); ``model``: the served model name; ``api_key``: sent as a
    Bearer token when given (default: the ``OPENAI_API_KEY`` environment variable, if set)."""

    backend = "openai"

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        timeout: float = 120.0,
        cache_dir: str | os.PathLike | None = None,
        question: str = QUESTION,
    ):
        if not re.match(r"^https?://", endpoint):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        base = endpoint.rstrip("/")
        if base.endswith("/chat/completions"):
            url = base
        else:
            url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self.url = url
        settings = {"max_tokens": int(max_tokens), "temperature": float(temperature), "seed": int(seed)}
        super().__init__(model, settings, cache_dir=cache_dir, question=question)
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout

    def _generate(self, prompt: str) -> str:
        body = {"model": self.model_id, "messages": [{"role": "user", "content": prompt}], **self.settings}
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            raise RuntimeError(f"{self.url} answered HTTP {e.code}: {detail}") from e
        except urllib.error.URLError as e:
            raise RuntimeError(f"cannot reach the LLM endpoint {self.url}: {e.reason}") from e
        try:
            return payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RuntimeError(
                f"{self.url} returned no choices[0].message.content: {json.dumps(payload)[:300]}"
            ) from None
