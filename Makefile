# semsplat — two commands: `make demo` and `make test` (both create .venv and install on first use).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.semsplat-installed
# Pinned pair that imports on CPU (PyPI torchvision fails beside other torch builds).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo

.PHONY: install test lint demo clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# Keep a torch that already works (GPU users bring their own CUDA build).
	@$(PY) -c "import torch, torchvision" 2>/dev/null && echo "keeping installed torch" || $(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e ".[test]"
	@# sam2's sdist would build in isolation and pull a second torch: build it against ours.
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --no-build-isolation "sam2==1.1.0"
	touch $@

# Headless Chromium for the viewer test (Debian packages; needs root). Best effort: without it
# that one test skips with a reason.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
	  echo "chromium unavailable: tests/test_viewer_browser.py will skip"

# ruff (lint + format) and pyright (basic), configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

# Passive OpenMP waits: spinning threads starve each other on small shared CPUs.
test: $(STAMP) browser lint
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/semsplat-demo --out $(DEMO_DIR)

clean:
	rm -rf $(DEMO_DIR) outputs .pytest_cache
