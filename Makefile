# Two commands: `make tune` (set up, build the MIT-BIH tables, tune, report) and `make test`.
# Experiments (cross-validation, proxies, ablations) are scripts: experiments/README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= data
# Raw MIT-BIH records: a local copy when there is one, else downloaded from PhysioNet.
MITDB ?= $(firstword $(wildcard ../shared/data/physionet/mitdb) $(DATA)/raw/mitdb)
# The noise records of the MIT-BIH Noise Stress Test Database: the local copy (em_est118 for
# electrode motion), else nstdb's bw, em and ma downloaded from PhysioNet.
NSTDB ?= $(firstword $(wildcard ../shared/data/physionet/nstdb) $(DATA)/raw/nstdb)
# The course's PTB beats; Kaggle's ptbdb_normal.csv + ptbdb_abnormal.csv, concatenated, work too.
PTB_SAMPLE ?= ../shared/data/course/ptb_sample.parq
CONFIG ?= configs/mitbih.py
WORKDIR ?= runs/mitbih

.PHONY: setup data data-interpatient data-ptb data-noise stress tune tune-ptb tune-cnn2d tune-transformer \
	tune-interpatient train mitbih-best interpatient-best interpatient-ensemble ptb-best \
	annotate-ds2 annotate-ds2-ensemble pretrained test test-fast lint

# `make setup CUDA=1`: also JAX's CUDA 12 plugin for NVIDIA GPUs (the `cuda` extra). Its own
# stamp, so that it installs over an existing CPU setup; it also stamps the CPU setup done.
comma := ,
EXTRAS := dev$(if $(filter 1,$(CUDA)),$(comma)cuda)
setup: $(VENV)/.installed$(if $(filter 1,$(CUDA)),-cuda)

$(VENV)/.installed $(VENV)/.installed-cuda: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(sort $@ $(VENV)/.installed)

$(MITDB)/RECORDS: | setup
	$(PY) -m heartjax.data download mitbih --out $(MITDB)

$(DATA)/heart_big_train.parq: | setup $(MITDB)/RECORDS
	$(PY) -m heartjax.data build mitbih --raw $(MITDB) --out $(DATA)

data: $(DATA)/heart_big_train.parq

# DS1 (train) / DS2 (test) of de Chazal et al.: no patient in both
$(DATA)/interpatient/heart_big_train.parq: | setup $(MITDB)/RECORDS
	$(PY) -m heartjax.data build mitbih --raw $(MITDB) --out $(DATA)/interpatient --split interpatient

# the same beats cut from each record's second lead (V1, V2, V4 or V5): :interpatient trains on both
$(DATA)/interpatient_lead2/heart_big_train.parq: | setup $(MITDB)/RECORDS
	$(PY) -m heartjax.data build mitbih --raw $(MITDB) --out $(DATA)/interpatient_lead2 --split interpatient --leads V1,V2,V4,V5

# svdb (MIT-BIH Supraventricular Arrhythmia, 128 Hz): the 39 records :interpatient learns from
# (heartjax.data.physionet.SVDB_DEV_RECORDS; the other 39 stay unseen, to test on), each from
# ECG1 (near lead II) and ECG2
SVDB ?= $(firstword $(wildcard ../shared/data/physionet/svdb-dev) $(DATA)/raw/svdb)
SVDB_DEV := 803,804,807,809,811,812,820,821,825,826,827,829,840,841,843,844,848,850,852,853,854,855,856,857,859,862,863,864,865,866,867,868,870,874,875,881,883,884,888
$(SVDB)/RECORDS: | setup
	$(PY) -m heartjax.data download svdb --out $(SVDB)

$(DATA)/svdb/heart_big_all.parq: | setup $(SVDB)/RECORDS
	$(PY) -m heartjax.data build wfdb --raw $(SVDB) --database svdb --leads ECG1 --records $(SVDB_DEV) --out $(DATA)/svdb

$(DATA)/svdb_lead2/heart_big_all.parq: | setup $(SVDB)/RECORDS
	$(PY) -m heartjax.data build wfdb --raw $(SVDB) --database svdb --leads ECG2 --records $(SVDB_DEV) --out $(DATA)/svdb_lead2

data-interpatient: $(DATA)/interpatient/heart_big_train.parq $(DATA)/interpatient_lead2/heart_big_train.parq \
	$(DATA)/svdb/heart_big_all.parq $(DATA)/svdb_lead2/heart_big_all.parq

$(DATA)/ptb/heart_train.parq: | setup
	$(PY) -m heartjax.data split $(PTB_SAMPLE) --out $(DATA)/ptb

data-ptb: $(DATA)/ptb/heart_train.parq

# Real recorder noise for training (--config.train.augment.real_noise=SHARE
# --config.data.noise_file=data/noise/noise.npz): nstdb's bw, ma and em at 125 Hz (4 MiB).
$(NSTDB)/bw.hea: | setup
	$(PY) -m heartjax.data download noise --out $(NSTDB)

$(DATA)/noise/noise.npz: | setup $(NSTDB)/bw.hea
	$(PY) -m heartjax.data build noise --raw $(NSTDB) --out $(DATA)/noise

data-noise: $(DATA)/noise/noise.npz

# 45 min of search (tune.time_budget_s), the winner's full-fidelity training, the report in
# WORKDIR/report. Run again, it continues an interrupted run instead of refusing to overwrite it.
tune: setup data
	$(PY) -m heartjax.tune --config $(CONFIG) --workdir $(WORKDIR) $(if $(wildcard $(WORKDIR)/ray),--resume)

# PTB: 20 min of search on the course sample's training part, the winner, the report.
tune-ptb: setup data-ptb
	$(PY) -m heartjax.tune --config configs/ptb.py --workdir runs/ptb $(if $(wildcard runs/ptb/ray),--resume)

# The course's two models tuned on MIT-BIH from their untuned originals; the report puts each
# original beside its tuned winner on the test split.
tune-cnn2d tune-transformer: tune-%: setup data
	$(PY) -m heartjax.tune --config configs/mitbih.py:tune_$* --workdir runs/mitbih-tune_$* $(if $(wildcard runs/mitbih-tune_$*/ray),--resume)

# The new-patient search on DS1 alone, every configuration scored by cross-validation over the
# DS1 records (40 min, then the winner's full training); its report leaves DS2 unread, since
# DS2 is looked at once, by the model chosen on DS1.
tune-interpatient: setup data-interpatient
	$(PY) -m heartjax.tune --config configs/mitbih.py:tune_interpatient --workdir runs/mitbih-tune_interpatient --no-report $(if $(wildcard runs/mitbih-tune_interpatient/ray),--resume)
	$(PY) -m heartjax.report runs/mitbih-tune_interpatient --out runs/mitbih-tune_interpatient/report --no-test

train: setup data
	$(PY) -m heartjax.train --config $(CONFIG) --workdir runs/train-$(notdir $(basename $(CONFIG)))

# MIT-BIH best (configs/mitbih.py:best, about 20 min) and its test metrics in reports/.
runs/mitbih-best/best.json: | setup data
	$(PY) -m heartjax.train --config configs/mitbih.py:best --workdir runs/mitbih-best

mitbih-best: runs/mitbih-best/best.json
	$(PY) -m heartjax.evaluate --checkpoint runs/mitbih-best --data $(DATA)/heart_big_test.parq --json > reports/mitbih_best_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/mitbih-best --data $(DATA)/heart_big_test.parq --plot reports/mitbih_best_cm.png

# The new-patient model (configs/mitbih.py:interpatient, about 5 min a seed): trained and chosen
# on MIT-BIH DS1 and svdb's development half, tested on DS2; seed 0 is runs/interpatient-best,
# seeds 1 and 2 runs/interpatient-seedN.
INTERPATIENT_TRAIN := $(PY) -m heartjax.train --config configs/mitbih.py:interpatient --config.data.dir=$(DATA)/interpatient \
	--config.data.train_files='("$(DATA)/interpatient/heart_big_train.parq","$(DATA)/svdb/heart_big_all.parq")' \
	--config.data.extra_train=$(DATA)/interpatient_lead2/heart_big_train.parq,$(DATA)/svdb_lead2/heart_big_all.parq
DS2_TABLE := $(DATA)/interpatient/heart_big_test.parq
ENSEMBLE := runs/interpatient-best runs/interpatient-seed1 runs/interpatient-seed2

runs/interpatient-best/best.json: | setup data-interpatient
	$(INTERPATIENT_TRAIN) --workdir runs/interpatient-best

runs/interpatient-seed%/best.json: | setup data-interpatient
	$(INTERPATIENT_TRAIN) --config.train.seed=$* --workdir runs/interpatient-seed$*

interpatient-best: runs/interpatient-best/best.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-best --data $(DS2_TABLE) --json > reports/interpatient_best_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-best --data $(DS2_TABLE) --plot reports/interpatient_best_cm.png

# the seeds alone and the three seeds' ensemble (the mean of their probabilities)
interpatient-ensemble: $(addsuffix /best.json,$(ENSEMBLE))
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-seed1 --data $(DS2_TABLE) --json > reports/interpatient_seed1_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-seed2 --data $(DS2_TABLE) --json > reports/interpatient_seed2_test.json
	$(PY) -m heartjax.evaluate --checkpoint $(ENSEMBLE) --data $(DS2_TABLE) --json > reports/interpatient_ensemble_test.json
	$(PY) -m heartjax.evaluate --checkpoint $(ENSEMBLE) --data $(DS2_TABLE) --plot reports/interpatient_ensemble_cm.png

# the three seeds' ensemble becomes the model that ships with heartjax (heartjax/pretrained/
# interpatient: `heartjax.annotate`'s default, heartjax.pretrained()); its MODEL.md stays
pretrained: $(addsuffix /best.json,$(ENSEMBLE))
	$(PY) -m heartjax.pretrained $(ENSEMBLE) --name interpatient

# PTB with transfer (configs/ptb.py:best): the MIT-BIH source model (about 9 min), the PTB
# fine-tune and its test metrics, with the threshold chosen on validation.
runs/mitbih-source/best.json: | setup data
	$(PY) -m heartjax.train --config configs/mitbih.py --config.train.epochs=8 --workdir runs/mitbih-source

runs/ptb-best/best.json: | setup data-ptb runs/mitbih-source/best.json
	$(PY) -m heartjax.train --config configs/ptb.py:best --workdir runs/ptb-best

ptb-best: runs/ptb-best/best.json
	$(PY) -m heartjax.evaluate --checkpoint runs/ptb-best --data $(DATA)/ptb/heart_test.parq --json > reports/ptb_best_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/ptb-best --data $(DATA)/ptb/heart_test.parq

# The new-patient model annotates the 22 DS2 records from their raw signals alone (its own QRS
# detection, no reference positions), then heartjax.score compares with the .atr (EC57, with the
# literature's AAMI class table, as the published figures; its default is bxb's table);
# annotate-ds2-ensemble does the same with the three seeds' ensemble.
DS2 := 100 103 105 111 113 117 121 123 200 202 210 212 213 214 219 221 222 228 231 232 233 234
annotate-ds2: runs/interpatient-best/best.json
	$(PY) -m heartjax.annotate $(addprefix $(MITDB)/,$(DS2)) --checkpoint runs/interpatient-best --out runs/annotate-ds2 --plot 600:612
	$(PY) -m heartjax.score --classes aami --records $(MITDB) --test-dir runs/annotate-ds2 $(DS2) --json > reports/annotate_ds2.json
	$(PY) -m heartjax.score --classes aami --records $(MITDB) --test-dir runs/annotate-ds2 $(DS2) | tee reports/annotate_ds2.txt

annotate-ds2-ensemble: $(addsuffix /best.json,$(ENSEMBLE))
	$(PY) -m heartjax.annotate $(addprefix $(MITDB)/,$(DS2)) --checkpoint $(ENSEMBLE) --out runs/annotate-ds2-ensemble
	$(PY) -m heartjax.score --classes aami --records $(MITDB) --test-dir runs/annotate-ds2-ensemble $(DS2) --json > reports/annotate_ds2_ensemble.json
	$(PY) -m heartjax.score --classes aami --records $(MITDB) --test-dir runs/annotate-ds2-ensemble $(DS2) | tee reports/annotate_ds2_ensemble.txt

# EC57's noise stress test of the new-patient model: records 118 and 119 with electrode-motion
# noise at 24 to -6 dB as nst adds it, annotated and scored (docs/noise.md); 14 annotations of
# a 30-minute record, one line each -> runs/stress, its table and figure -> reports/stress/
# the packaged model (heartjax.pretrained), or a run folder
STRESS_MODEL ?= interpatient
stress: | setup $(NSTDB)/bw.hea
	$(PY) -m heartjax.score stress --records $(MITDB) --noise $(NSTDB) --checkpoint $(STRESS_MODEL) --out runs/stress
	mkdir -p reports/stress
	cp runs/stress/stress.json runs/stress/stress.md runs/stress/stress.png reports/stress/

# the whole suite on the real data in ../shared (CI's command)
test: setup
	$(PY) -m pytest -q

# the quick tests: no training longer than a few seconds, no ../shared needed
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check heartjax configs experiments tests notebooks
