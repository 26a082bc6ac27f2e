# The two commands a newcomer needs: `make run` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-unit test-integration system-packages bench chaos fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/hrx up --demo

# Parallel workers for `make test` (the suite waits on brokers, databases and peers more than on the CPU); the
# `serial` tests (the fault suite's short form: it restarts PostgreSQL) run alone afterwards.
TEST_WORKERS ?= 3

test: $(VENV)/.installed system-packages
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not serial"
	$(BIN)/python -m pytest -q -p no:xdist -m serial

# What the tests need from the operating system (tools/system-packages.txt: PostgreSQL, dcmtk, Orthanc, Chromium,
# a CJK font): installed when run as root with apt-get, otherwise named, and `make test` stops before it starts.
system-packages:
	@tools/system-packages

# The two tiers of `make test` (tests/fixtures/tiers.py): in-process tests, then those needing PostgreSQL,
# a broker, DICOM peers or other processes.
test-unit: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m unit

test-integration: $(VENV)/.installed system-packages
	$(BIN)/python -m pytest -q -m integration

bench: $(VENV)/.installed
	$(BIN)/python -m bench

# The fault suite (chaos/): kills and restarts engine, broker and PostgreSQL, fills the DICOM spool's disk
# (root: it mounts a tmpfs). About 15 minutes; `make test` runs its short form (tests/chaos/).
chaos: $(VENV)/.installed
	$(BIN)/python -m chaos

# Every fuzzing harness (fuzz/) for FUZZ_SECONDS each; inputs reaching new coverage are merged into fuzz/corpus.
FUZZ_SECONDS ?= 600
fuzz: $(VENV)/.installed
	$(BIN)/python -m fuzz --seconds $(FUZZ_SECONDS) --keep

clean:
	rm -rf $(VENV) var build *.egg-info
