# semsplat — two commands: `make demo` and `make test` (both create .venv and install on first use).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
PACKAGES := $(VENV)/.semsplat-packages
STAMP := $(VENV)/.semsplat-installed
# Pinned pair that imports on CPU (PyPI torchvision fails beside other torch builds).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo
# pytest-xdist workers; every test file runs whole on one worker (its module fixtures are built once).
TEST_WORKERS ?= 2

.PHONY: install test lint demo clean browser

install: $(STAMP)

# uv (from PyPI, into the venv) installs the ~280 packages: it fetches and unpacks in parallel, where pip
# took 3-4 times as long here. uv does not read pip's configuration, so it is handed the indexes pip would
# use (on the CPU box: local wheel mirrors, where the pinned torch lies), with pip's rule of taking the best
# version from any of them. Each uv install is tried --offline first, from uv's cache alone: online, uv
# revalidates every index page and sdist it cached, and the CPU box's PyPI answers "modified" for the
# sdists of fpsample (nerfstudio's) and sam2, so uv built them again each time (~25 s); the cache holds what
# the last online install resolved, and whatever it lacks (a cold cache, a new requirement) makes the online
# install run instead.
# Bytecode: pip writes .pyc files as it installs, uv only when asked, and without them every process (each
# ns-train of the tests) compiles nerfstudio's and torch's sources again where PYTHONDONTWRITEBYTECODE is set,
# as on the CPU box. uv's --compile-bytecode compiles all ~20,000 modules of the venv (73 s on the 2-core
# box); importing what the commands import, with the bytecode cache on, writes the ~5,500 they load (~30 s):
# all of semsplat_ns, nerfstudio's commands, what a training run imports later (splatfacto's metrics and
# k-nearest-neighbour initialisation, torch's extension loader) and pytest.
BYTECODE_MODULES := nerfstudio.scripts.train nerfstudio.scripts.viewer.run_viewer nerfstudio.scripts.render \
  nerfstudio.scripts.eval torchmetrics.image.lpip sklearn.neighbors torch.utils.cpp_extension pytest xdist
$(PACKAGES): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install -q "uv>=0.9"
	@# Keep a torch that already works (GPU users bring their own CUDA build). sam2's sdist would build in
	@# isolation and pull a second torch: it is built against ours, after the rest.
	@torch="$(TORCH_SPEC)"; $(PY) -c "import torch, torchvision" 2>/dev/null && { echo "keeping installed torch"; torch=; }; \
	  pip_config() { $(PY) -m pip config get "global.$$1" 2>/dev/null; }; \
	  index=$${PIP_INDEX_URL:-$$(pip_config index-url)}; args=$${index:+--index-url $$index}; \
	  for url in $${PIP_EXTRA_INDEX_URL:-$$(pip_config extra-index-url)}; do args="$$args --extra-index-url $$url"; done; \
	  for dir in $${PIP_FIND_LINKS:-$$(pip_config find-links)}; do args="$$args --find-links $$dir"; done; \
	  uv_install() { \
	    echo "+ $(UV) pip install --python $(PY) --offline $$*"; \
	    $(UV) pip install --python $(PY) --offline "$$@" 2> $(VENV)/uv-offline.log && cat $(VENV)/uv-offline.log || \
	    { echo "+ not all in uv's cache, online: $(UV) pip install --python $(PY) $$*"; $(UV) pip install --python $(PY) "$$@"; }; }; \
	  export SAM2_BUILD_CUDA=0; \
	  uv_install --index-strategy unsafe-best-match $$args $$torch -e ".[test]" && \
	  uv_install --compile-bytecode --no-build-isolation "sam2==1.1.0"
	touch $@

$(STAMP): $(PACKAGES)
	@echo "writing the bytecode of the modules the commands load"
	@env -u PYTHONDONTWRITEBYTECODE $(PY) -W ignore -c 'import importlib, pkgutil, sys, semsplat_ns; \
	  [importlib.import_module(m.name) for m in pkgutil.walk_packages(semsplat_ns.__path__, "semsplat_ns.")]; \
	  [importlib.import_module(name) for name in sys.argv[1:]]' $(BYTECODE_MODULES) > $(VENV)/bytecode.log 2>&1 || \
	  { cat $(VENV)/bytecode.log; exit 1; }
	touch $@

# Headless Chromium for the viewer test, COLMAP and ffmpeg for the ns-process-data walkthrough test (Debian
# packages; needs root). Best effort: without them
# those tests skip with a reason.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v colmap >/dev/null && command -v ffmpeg >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver colmap ffmpeg) || \
	  echo "chromium, colmap or ffmpeg unavailable: the viewer and ns-process-data tests will skip"

# ruff (lint + format) and pyright (basic), configured in pyproject.toml.
lint: $(PACKAGES)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

# Chromium (apt) installs beside the Python packages; lint (pyright: ~40 s of one core) runs beside the
# bytecode step (one core) and then the tests, its output printed when it ends, and a lint failure fails
# `make test` as before.
# Passive OpenMP waits: spinning threads starve each other on small shared CPUs.
test:
	@$(MAKE) --no-print-directory -j2 $(PACKAGES) browser
	@{ $(MAKE) --no-print-directory lint > $(VENV)/lint.log 2>&1; echo $$? > $(VENV)/lint.rc; \
	   printf '\n---- make lint (exit %s)\n' "$$(cat $(VENV)/lint.rc)"; cat $(VENV)/lint.log; echo ----; } & lint=$$!; \
	  $(MAKE) --no-print-directory $(STAMP) || { wait $$lint; exit 1; }; \
	  OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder; tests=$$?; wait $$lint; \
	  if [ "$$(cat $(VENV)/lint.rc)" != 0 ]; then echo "make test: make lint failed (output above)"; exit 1; fi; \
	  exit $$tests

demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/semsplat-demo --out $(DEMO_DIR)

clean:
	rm -rf $(DEMO_DIR) outputs .pytest_cache
