# Every target works on a fresh clone: the virtualenv and its packages come from here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/iommu-harness
STAMP := $(VENV)/.installed-stamp
DEMO := results/demo

.PHONY: install test demo bench samples clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("needs Python >= 3.11 with venv; run make PYTHON=python3.11 ...") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	mkdir -p $(DEMO)
	$(CLI) trace synth nic-rx -o $(DEMO)/nic-rx.arrow --packets 1000000 --queues 8 --ring 1024 --rate 8e6
	$(CLI) trace info $(DEMO)/nic-rx.arrow
	$(CLI) run $(DEMO)/nic-rx.arrow --model intel-vtd-legacy --flush strict --gfp atomic --out $(DEMO)
	$(CLI) run $(DEMO)/nic-rx.arrow --model intel-vtd-legacy --flush lazy --gfp atomic --out $(DEMO)

bench: $(STAMP)
	$(PY) -m benchmarks.bench_throughput

clean:
	rm -rf $(VENV) .bench

samples: $(STAMP)
	$(PY) -m harness.trace.samples traces/samples
