# One command each: `make tune` (set up, build the data, run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
# Raw MIT-BIH records: a local copy when there is one, else downloaded from PhysioNet.
MITDB ?= $(firstword $(wildcard ../shared/data/physionet/mitdb) $(DATA)/raw/mitdb)
PTB_SAMPLE ?= ../shared/data/course/ptb_sample.parq
CONFIG ?= configs/mitbih.py
WORKDIR ?= runs/mitbih

.PHONY: setup data data-ptb tune train test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

$(MITDB)/RECORDS: | setup
	$(PY) -m heartjax.data download mitbih --out $(MITDB)

$(DATA)/heart_big_train.parq: | setup $(MITDB)/RECORDS
	$(PY) -m heartjax.data build mitbih --raw $(MITDB) --out $(DATA)

data: $(DATA)/heart_big_train.parq

$(DATA)/ptb/heart_train.parq: | setup
	$(PY) -m heartjax.data split $(PTB_SAMPLE) --out $(DATA)/ptb

data-ptb: $(DATA)/ptb/heart_train.parq

# Rerunning `make tune` continues an interrupted run instead of refusing to overwrite it.
tune: setup data
	$(PY) -m heartjax.tune --config $(CONFIG) --workdir $(WORKDIR) $(if $(wildcard $(WORKDIR)/ray),--resume)

train: setup data
	$(PY) -m heartjax.train --config $(CONFIG) --workdir runs/train-$(notdir $(basename $(CONFIG)))

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check heartjax configs experiments tests

clean:
	rm -rf $(VENV) .pytest_cache
