"""The LLM client offline: answer parsing, de-duplication, the on-disk cache, a tiny randomly
initialised GPT-2 from a local folder, and a fake OpenAI-compatible endpoint on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from genssl_hf.prompts import build_elaborated_prompts
from genssl_hf.prompts.llm import (
    QUESTION,
    OpenAIFeatureLLM,
    TransformersFeatureLLM,
    dedupe_features,
    feature_key,
    parse_features,
)

ANSWER = """The most necessary visual features are:
1. **Blunting of the costophrenic angles**: fluid collects in the dependent recesses.
2) Meniscus sign
- meniscus signs
* Opacity at the lung base, obscured hemidiaphragm; layering fluid
\u2022 Mediastinal shift - seen with large effusions
These findings together suggest an effusion, which should be confirmed on a lateral view or with ultrasound when \
uncertain.
"""


def test_parse_features_bullets_numbers_commas_and_dedupe():
    feats = parse_features(ANSWER)
    assert feats == [
        "Blunting of the costophrenic angles",
        "Meniscus sign",
        "Opacity at the lung base",
        "obscured hemidiaphragm",
        "layering fluid",
        "Mediastinal shift",
    ]
    assert parse_features("air bronchograms, lobar opacity and silhouette sign.") == [
        "air bronchograms",
        "lobar opacity",
        "silhouette sign",
    ]
    assert parse_features("") == []


def test_dedupe_is_case_whitespace_and_plural_insensitive():
    assert dedupe_features(
        ["Kerley B lines", "kerley  b line", "KERLEY B LINES", "the Kerley B lines", "air bronchogram"]
    ) == [
        "Kerley B lines",
        "air bronchogram",
    ]
    assert feature_key("Opacities  of the Lung") == feature_key("opacity of lung")


# --- fake OpenAI-compatible server -------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model exploded")
            return
        payload = {"choices": [{"message": {"role": "assistant", "content": ANSWER}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_endpoint():
    _Handler.requests = []
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", _Handler.requests
    finally:
        server.shutdown()
        server.server_close()


def test_openai_endpoint_client_and_cache(fake_endpoint, tmp_path):
    url, requests = fake_endpoint
    llm = OpenAIFeatureLLM(url, "tiny-served", api_key="sk-test", cache_dir=tmp_path)
    feats = llm.features("Pleural Effusion")
    assert "Meniscus sign" in feats and len(feats) == 6
    assert len(requests) == 1
    req = requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "tiny-served"
    assert req["body"]["messages"][0]["content"] == QUESTION.format(disease="Pleural Effusion")
    assert req["body"]["temperature"] == 0.0
    # a rerun (new client, same settings) reads the cache: no new request, same features
    again = OpenAIFeatureLLM(url + "/v1", "tiny-served", cache_dir=tmp_path)
    assert again.features("Pleural Effusion") == feats and len(requests) == 1 and again.calls == 0
    cached = list(tmp_path.glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["model"] == "tiny-served"
    # other settings -> another cache key -> a new request; refresh=True asks again
    OpenAIFeatureLLM(url, "tiny-served", max_tokens=64, cache_dir=tmp_path).features("Pleural Effusion")
    assert len(requests) == 2
    llm.features("Pleural Effusion", refresh=True)
    assert len(requests) == 3
    with pytest.raises(RuntimeError, match="HTTP 500"):
        OpenAIFeatureLLM(url, "broken", cache_dir=tmp_path).ask("Edema")
    with pytest.raises(ValueError, match="http"):
        OpenAIFeatureLLM("localhost:1234", "m")


def test_llm_features_extend_elaborated_candidates(fake_endpoint, tmp_path):
    url, _ = fake_endpoint
    llm = OpenAIFeatureLLM(url, "tiny-served", cache_dir=tmp_path)
    cands = {"diseases": {"Pleural Effusion": [{"feature": "meniscus sign", "provenance": "curated"}]}}
    reports = ["Meniscus sign at the left base with layering fluid.", "Obscured hemidiaphragm."]
    ps = build_elaborated_prompts(reports, candidates=cands, threshold=0.0, llm=llm)
    feats = [f for f in ps.metadata["features"]]
    assert [f["provenance"] for f in feats].count("curated") == 1  # "Meniscus sign" deduplicated
    assert {f["feature"] for f in feats if f["provenance"] == "llm"} >= {"layering fluid", "obscured hemidiaphragm"}
    assert ps.metadata["llm"]["model"] == "tiny-served" and ps.metadata["llm"]["backend"] == "openai"


# --- tiny transformers model -------------------------------------------------------------------
WORDS = [
    "opacity",
    "effusion",
    "lung",
    "base",
    "blunting",
    "angle",
    "meniscus",
    "sign",
    "fluid",
    "air",
    "edema",
    "heart",
]


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[EOS]"]
    vocab = {
        w: i
        for i, w in enumerate(specials + WORDS + [",", "-", ".", "?", "what", "is", "to", "in", "x", "ray", "chest"])
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(vocab),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = GPT2LMHeadModel(cfg)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


def test_transformers_client_local_folder_and_cache(tiny_gpt2, tmp_path, monkeypatch):
    kw = dict(max_new_tokens=16, do_sample=True, seed=3, cache_dir=tmp_path)
    llm = TransformersFeatureLLM(str(tiny_gpt2), **kw)
    answer = llm.ask("Edema")
    assert isinstance(answer, str) and llm.calls == 1
    words = answer.replace(",", " ").replace("-", " ").split()
    assert words and set(words) <= set(WORDS) | {",", "-", ".", "?", "what", "is", "to", "in", "x", "ray", "chest"}
    feats = llm.features("Edema")  # from the cache
    assert llm.calls == 1
    assert feats and feats == parse_features(answer)
    assert all(set(f.split()) <= set(WORDS) | {"what", "is", "to", "in", "x", "ray", "chest", "-"} for f in feats)
    # a fresh client reads the cache without generating; seeded sampling is reproducible
    fresh = TransformersFeatureLLM(str(tiny_gpt2), **kw)
    monkeypatch.setattr(fresh, "_generate", lambda prompt: pytest.fail("cache miss"))
    assert fresh.ask("Edema") == answer
    monkeypatch.undo()
    assert TransformersFeatureLLM(str(tiny_gpt2), **kw).ask("Edema", refresh=True) == answer
    # the cache key depends on the generation settings; greedy decoding works too
    other = TransformersFeatureLLM(str(tiny_gpt2), max_new_tokens=5, cache_dir=tmp_path)
    assert isinstance(other.ask("Edema"), str) and other.calls == 1
    assert other.cache_key(other.prompt("Edema")) != llm.cache_key(llm.prompt("Edema"))


def test_cli_with_llm_endpoint(fake_endpoint, tmp_path):
    from genssl_hf.prompts import PromptSet
    from genssl_hf.prompts.build import main

    url, requests = fake_endpoint
    reports = tmp_path / "r.txt"
    reports.write_text("Layering fluid at the right base.\nObscured hemidiaphragm, no edema.\n")
    cands = tmp_path / "c.json"
    cands.write_text(json.dumps({"diseases": {"Pleural Effusion": ["meniscus sign"]}}))
    out = tmp_path / "out"
    argv = [
        "--strategy",
        "elaborated",
        "--reports",
        str(reports),
        "--candidates",
        str(cands),
        "--output_dir",
        str(out),
        "--threshold",
        "0.2",
        "--llm-endpoint",
        url,
        "--llm-endpoint-model",
        "tiny-served",
        "--llm-cache",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    assert main(argv) == 0
    ps = PromptSet.from_pretrained(out)
    assert (
        "Pleural Effusion with layering fluid" in ps.texts
        and "Pleural Effusion with no obscured hemidiaphragm" in ps.texts
    )
    assert {p.feature_provenance for p in ps} == {"llm"} and len(requests) == 1
    assert main([*argv[:-1], "--overwrite", "--no-progress"]) == 0 and len(requests) == 1  # cached
    with pytest.raises(SystemExit, match="only apply to --strategy elaborated"):
        main(["--strategy", "heuristic", "--output_dir", str(tmp_path / "h"), "--llm-endpoint", url])
    assert not (tmp_path / "h").exists()
