# Every target works on a fresh clone: the virtualenv and its packages come from here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/iommu-harness
STAMP := $(VENV)/.installed-stamp
DEMO := results/default

.PHONY: install test demo bench samples clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("needs Python >= 3.11 with venv; run make PYTHON=python3.11 ...") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

ASV := $(VENV)/bin/asv

# Tests run on TEST_JOBS processes; the kernel is compiled (and cached) first, once,
# rather than by every process that needs it at the same time.
TEST_JOBS ?= 2

test: $(STAMP)
	$(CLI) run traces/samples/nic-rx.arrow > /dev/null
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadgroup
	$(ASV) machine --yes > /dev/null
	$(ASV) check --python=same
	$(ASV) run --python=same --quick --dry-run --show-stderr > .asv-quick.log 2>&1 || (cat .asv-quick.log; exit 1)

demo: $(STAMP)
	$(CLI) sweep sweeps/default.toml -o $(DEMO)
	$(CLI) summary $(DEMO)
	$(CLI) report $(DEMO) -o $(DEMO)/report.html

bench: $(STAMP)
	$(ASV) machine --yes > /dev/null
	$(ASV) run --python=same --set-commit-hash $$(git rev-parse HEAD)
	$(ASV) publish
	$(PY) -m benchmarks.bench_throughput --sweep sweeps/default.toml

clean:
	rm -rf $(VENV) .bench

samples: $(STAMP)
	$(PY) -m harness.trace.samples traces/samples
