# Two commands for a new user: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned in the set-up step only: the CPU build lies on disk here, and an
# unpinned torch would pull a multi-GB CUDA build. pyproject.toml keeps real ranges for GPU users.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.genssl-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: venv browser test demo smoke bench app clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet --no-deps "monai-generative==0.2.3"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(MAKE) --no-print-directory browser
	touch $(STAMP)

# A headless browser for tests/test_app.py: Debian's chromium and its chromedriver (root + apt-get only;
# elsewhere the browser test skips and says why).
browser:
	@command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		echo "no chromium / chromedriver installed: the app's browser test will skip"

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) benchmarks/code_shape.py --check  # modules <= 500 lines, functions <= 80 (or a '# long:' reason)
	$(PY) -m pytest -n 2 --timeout 900 -q -ra tests

demo: $(STAMP)
	$(PY) scripts/run_pipeline.py --preset demo

smoke: $(STAMP)
	$(PY) scripts/run_pipeline.py --preset smoke

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The browser app over the package's artifacts and outputs/demo (when it exists): http://127.0.0.1:7860
app: $(STAMP)
	$(PY) -m genssl_hf.app

clean:
	rm -rf outputs .pytest_cache
