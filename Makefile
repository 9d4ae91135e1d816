# Two commands set everything up on a fresh machine: `make dataset` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NLTK_DATA := $(CURDIR)/.nltk_data
WORDNET := $(NLTK_DATA)/corpora/wordnet/lexnames
export NLTK_DATA
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install wordnet chromium dataset test bench experiment audit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# WordNet 3.0 for nltk, offline: nltk's downloader when it can reach its server, otherwise
# Debian's wordnet-base / wordnet-sense-index files laid out the way nltk's reader wants.
wordnet: $(WORDNET)

$(WORDNET): $(STAMP)
	@if [ ! -f /usr/share/wordnet/data.noun ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null)); fi
	$(BIN)/python -m witcurate.queries.wordnet_setup $(NLTK_DATA)

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

test: $(STAMP) $(WORDNET) $(CHROMEDRIVER)
	$(BIN)/python -m pytest

bench: $(STAMP) $(WORDNET)
	$(BIN)/python -m benchmarks

# Curated vs raw shards at equal compute, 3 seeds each; builds the demo run first if needed.
experiment: $(STAMP) $(WORDNET) dataset
	$(BIN)/witcurate experiment --run runs/demo

audit: $(STAMP)
	$(BIN)/witcurate audit runs/demo

clean:
	rm -rf runs demo_world
