# Two commands after cloning:  `make demo` (set up + run the main job), `make test` (set up + pass every test;
# `make test-fast` leaves out the slow and browser tests).
# Both create .venv in the repository the first time and reuse it afterwards.
# `make book` executes the notebooks (fast mode; FULL=1 for full mode, ONLY=01,03 for some) into book/*.html.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser demo test test-fast lab book bench clean

# JupyterLab refuses to start as root unless told; CI machines and containers run as root.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# The browser test (tests/test_browser.py) drives Debian's Chromium. Install it where it is missing and
# we may (root with apt-get, as on CI); elsewhere say how, and the test skips itself.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser test (apt-get)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
			|| echo "note: could not install chromium with apt-get"; \
	else \
		echo "note: no chromium (sudo apt-get install chromium); the browser test skips itself," \
			"or fails where CI=true or EQUIMOD_REQUIRE_BROWSER=1"; \
	fi

demo: setup
	$(PY) -m equimod_edu.cli demo

# The linter (ruff: [tool.ruff] in pyproject.toml), then every test, the slow and browser ones included
# (what CI runs: .ci/run), in one pytest-xdist worker per core (-n auto; a plain `pytest` runs them in one).
test: setup browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest --run-slow -n auto

# The quick local loop: the tests marked slow or browser are skipped (conftest.py).
test-fast: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n auto

lab: setup
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) notebooks/

# The course as static HTML with its outputs (book/index.html); the notebooks run in a scratch folder and
# stay without outputs. FULL=1: full mode. ONLY=01,03: some notebooks.
book: setup
	$(PY) -m equimod_edu.book $(if $(filter 1 yes true on,$(FULL)),--full) $(if $(ONLY),--only $(ONLY))

bench: setup
	$(PY) benchmarks/augment.py

clean:
	rm -rf $(VENV) runs data/cache book
