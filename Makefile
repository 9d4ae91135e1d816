# Two commands set everything up on a fresh machine: `make dataset` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NLTK_DATA := $(CURDIR)/.nltk_data
WORDNET := $(NLTK_DATA)/corpora/wordnet/lexnames
WORDNET_SOURCE ?= /usr/share/wordnet
export NLTK_DATA
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install wordnet chromium dataset test bench experiment audit clean

# make installs .venv/ and .nltk_data/ and writes runs/ and demo_world/ in this folder: in a
# clone that cannot be written, stop at once with one line (not a venv or pip traceback).
# Only `test` and `audit` on a clone already set up need no write.
GOALS := $(or $(MAKECMDGOALS),install)
SET_UP := $(and $(wildcard $(STAMP)),$(wildcard $(WORDNET)))
READ_ONLY_OK := $(and $(SET_UP),$(if $(filter-out test audit install wordnet,$(GOALS)),,yes))
ifneq ($(shell test -w '$(CURDIR)' && echo yes),yes)
ifeq ($(READ_ONLY_OK),)
$(error $(CURDIR) is not writable, and make installs .venv/ and .nltk_data/ and writes runs/ here: clone into a folder you can write to (or fix its permissions) and run make there)
endif
endif

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# WordNet 3.0 for nltk, offline: nltk's downloader when it can reach its server, otherwise
# Debian's wordnet-base / wordnet-sense-index files laid out the way nltk's reader wants.
wordnet: $(WORDNET)

# Their output goes to a log: what fails is said in one line, with what to do.
WORDNET_LOG := $(VENV)/wordnet-setup.log

$(WORDNET): $(STAMP)
	@if [ ! -f $(WORDNET_SOURCE)/data.noun ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq wordnet-base wordnet-sense-index || \
		 (apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index)) >$(WORDNET_LOG) 2>&1; fi; \
	$(BIN)/python -m witcurate.queries.wordnet_setup $(NLTK_DATA) --source $(WORDNET_SOURCE) 2>>$(WORDNET_LOG) || { \
		echo "error: WordNet is not installed and nltk could not download it: run 'sudo apt-get install wordnet-base wordnet-sense-index' (or allow network access) and 'make $(GOALS)' again (details: $(WORDNET_LOG))" >&2; \
		exit 2; }

# Headless Chromium and its WebDriver for the run report's browser tests: Debian's packages,
# installed when missing and we are root; otherwise one line says what to install.
CHROMEDRIVER := /usr/bin/chromedriver

chromium: $(CHROMEDRIVER)

$(CHROMEDRIVER):
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		 (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)); \
	else echo "the report's browser tests need Chromium: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"; fi

dataset: $(STAMP) $(WORDNET)
	$(BIN)/witcurate run --config configs/demo.yaml
	$(BIN)/witcurate browse runs/demo

# The suite starts a few hundred Python processes (stage runs, Beam and download workers): with
# PYTHONDONTWRITEBYTECODE set, as on some CI machines, each would compile the package's modules
# again, so they are compiled once here (a no-op when up to date; skipped in a read-only clone).
test: $(STAMP) $(WORDNET) $(CHROMEDRIVER)
	@$(BIN)/python -m compileall -q witcurate tests benchmarks >/dev/null 2>&1 || true
	$(BIN)/python -m pytest

bench: $(STAMP) $(WORDNET)
	$(BIN)/python -m benchmarks

# The curation ablation at equal compute (raw; CLIP threshold; + semantic dedup; + target filter;
# both), 3 seeds each, table and verdict into the card; builds the demo run first if needed.
experiment: $(STAMP) $(WORDNET) dataset
	$(BIN)/witcurate experiment --run runs/demo

audit: $(STAMP)
	$(BIN)/witcurate audit runs/demo

clean:
	rm -rf runs demo_world
