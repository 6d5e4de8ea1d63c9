"""Credentials in text: what they look like, finding them, and redacting them from recorded commands.

Ground floor, so that every layer can scrub what it records (``build_prompts``' argv, the pipeline's
``command.txt``) and the publish step can refuse files that still carry one
(:mod:`genssl_hf.hub.outgoing`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

REDACTED = "REDACTED"  # no shell metacharacters: recorded commands stay copy-pasteable

# (kind, pattern); the patterns are specific enough not to fire on hashes, ids or base64 weights
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("Hugging Face OAuth token", re.compile(r"\bhf_oauth_[A-Za-z0-9]{30,}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]|github_pat)_[A-Za-z0-9_]{30,}\b")),
    ("OpenAI-style API key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b")),
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("URL with user:password", re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@\"'<>]+:[^\s/@\"'<>]+@[^\s\"'<>]+")),
)
# command-line options whose value is a secret whatever it looks like
SECRET_OPTIONS = re.compile(
    r"(--?(?:[A-Za-z0-9_-]*[_-])?(?:token|api[_-]?key|password|passwd|secret))(=|\s+)(\S+)", re.I
)
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/@\"'<>]+@")


@dataclass(frozen=True)
class SecretFinding:
    kind: str
    line: int
    excerpt: str  # the match with its middle masked, so a report never repeats the secret

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind} ({self.excerpt})"


def _mask(s: str) -> str:
    return s[:6] + "..." + s[-2:] if len(s) > 12 else s[:2] + "..."


def find_secrets(text: str) -> list[SecretFinding]:
    """Every credential-looking match in ``text`` (kind, line, masked excerpt)."""
    found = []
    for kind, pattern in SECRET_PATTERNS:
        for m in pattern.finditer(text):
            found.append(SecretFinding(kind, text.count("\n", 0, m.start()) + 1, _mask(m.group(0))))
    return sorted(found, key=lambda f: f.line)


def redact_secrets(text: str) -> str:
    """``text`` with credentials replaced: token-like strings, the ``user:password@`` of URLs and
    the values of ``--*token*`` / ``--*api_key*`` / ``--*password*`` / ``--*secret*`` options."""
    text = SECRET_OPTIONS.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    for _, pattern in SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def redact_argv(argv: list[str]) -> list[str]:
    """A command line fit to record: secret option values and credentials replaced."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("-") and "=" not in arg and SECRET_OPTIONS.match(arg + " x"):
            hide_next = True
            out.append(arg)
            continue
        out.append(redact_secrets(arg))
    return out
