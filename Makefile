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

.PHONY: setup data data-interpatient data-ptb tune tune-ptb tune-cnn2d tune-transformer tune-compare train mitbih-best tune-interpatient interpatient-best interpatient-ensemble crossval proxies ptb-best annotate-ds2 annotate-ds2-ensemble qrs-detectors test lint clean

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

data-interpatient: $(DATA)/interpatient/heart_big_train.parq $(DATA)/interpatient_lead2/heart_big_train.parq

# the same two tables cut from the lead band-passed to 0.5-40 Hz (`--filter bandpass`; make crossval)
$(DATA)/interpatient_bandpass/heart_big_train.parq: | setup $(MITDB)/RECORDS
	$(PY) -m heartjax.data build mitbih --raw $(MITDB) --out $(DATA)/interpatient_bandpass --split interpatient --filter bandpass
$(DATA)/interpatient_bandpass_lead2/heart_big_train.parq: | setup $(MITDB)/RECORDS
	$(PY) -m heartjax.data build mitbih --raw $(MITDB) --out $(DATA)/interpatient_bandpass_lead2 --split interpatient --leads V1,V2,V4,V5 --filter bandpass

$(DATA)/ptb/heart_train.parq: | setup
	$(PY) -m heartjax.data split $(PTB_SAMPLE) --out $(DATA)/ptb

data-ptb: $(DATA)/ptb/heart_train.parq

# Rerunning `make tune` continues an interrupted run instead of refusing to overwrite it.
# The search runs tune.time_budget_s (45 min), then the winner trains at full fidelity and the
# report is written to WORKDIR/report.
tune: setup data
	$(PY) -m heartjax.tune --config $(CONFIG) --workdir $(WORKDIR) $(if $(wildcard $(WORKDIR)/ray),--resume)

# PTB: the search on the course sample's training part (20 min), the winner, the report.
tune-ptb: setup data-ptb
	$(PY) -m heartjax.tune --config configs/ptb.py --workdir runs/ptb $(if $(wildcard runs/ptb/ray),--resume)

# The same space, seed and hour: random search with full-fidelity trials (ASHA by epochs)
# against the default (Optuna TPE on the ladder), side by side with one core and one trial at a
# time each, so that both see the same machine; the report's best_so_far.png draws both.
COMPARE = --config.tune.time_budget_s=3600 --config.tune.retrain=False --config.tune.max_concurrent_trials=1 --no-report
tune-compare: setup data
	mkdir -p runs/compare
	$(PY) -m heartjax.tune --config configs/mitbih.py --workdir runs/compare/random-full $(COMPARE) --config.tune.search_alg=random --config.tune.ladder=\(\) --config.tune.start_points=\(\) --config.tune.grace_period=3 > runs/compare/random-full.log 2>&1 & \
	$(PY) -m heartjax.tune --config configs/mitbih.py --workdir runs/compare/tpe-ladder $(COMPARE) > runs/compare/tpe-ladder.log 2>&1; \
	tpe=$$?; wait $$!; random=$$?; test $$tpe = 0 -a $$random = 0
	$(PY) -m heartjax.report runs/compare/random-full runs/compare/tpe-ladder --out reports/tune_compare

# The course's two models tuned on MIT-BIH: each search starts from the untuned original, and
# the report puts the original beside the tuned winner on the test split.
tune-cnn2d tune-transformer: tune-%: setup data
	$(PY) -m heartjax.tune --config configs/mitbih.py:tune_$* --workdir runs/mitbih-tune_$* $(if $(wildcard runs/mitbih-tune_$*/ray),--resume)

train: setup data
	$(PY) -m heartjax.train --config $(CONFIG) --workdir runs/train-$(notdir $(basename $(CONFIG)))

# MIT-BIH best (configs/mitbih.py:best, ~20 min here) and its test metrics in reports/.
runs/mitbih-best/best.json: | setup data
	$(PY) -m heartjax.train --config configs/mitbih.py:best --workdir runs/mitbih-best

mitbih-best: runs/mitbih-best/best.json
	$(PY) -m heartjax.evaluate --checkpoint runs/mitbih-best --data $(DATA)/heart_big_test.parq --json > reports/mitbih_best_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/mitbih-best --data $(DATA)/heart_big_test.parq --plot reports/mitbih_best_cm.png

# Interpatient (configs/mitbih.py:interpatient, ~3 min here): trained on DS1, tested on DS2.
runs/interpatient-best/best.json: | setup data-interpatient
	$(PY) -m heartjax.train --config configs/mitbih.py:interpatient --config.data.dir=$(DATA)/interpatient --config.data.extra_train=$(DATA)/interpatient_lead2/heart_big_train.parq --workdir runs/interpatient-best

# The new-patient search on DS1 alone: every configuration scored by cross-validation over the
# DS1 records (40 min, then the winner's full training); its report leaves DS2 unread, since
# DS2 is looked at once, by the model chosen on DS1.
tune-interpatient: setup data-interpatient
	$(PY) -m heartjax.tune --config configs/mitbih.py:tune_interpatient --workdir runs/mitbih-tune_interpatient --no-report $(if $(wildcard runs/mitbih-tune_interpatient/ray),--resume)
	$(PY) -m heartjax.report runs/mitbih-tune_interpatient --out runs/mitbih-tune_interpatient/report --no-test

interpatient-best: runs/interpatient-best/best.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-best --data $(DATA)/interpatient/heart_big_test.parq --json > reports/interpatient_best_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-best --data $(DATA)/interpatient/heart_big_test.parq --plot reports/interpatient_best_cm.png

# The interpatient config's seeds 1 and 2 (~3 min each), and the three seeds' ensemble (the mean
# of their probabilities): one seed's S recall on DS2 depends on the seed (docs/results.md).
runs/interpatient-seed%/best.json: | setup data-interpatient
	$(PY) -m heartjax.train --config configs/mitbih.py:interpatient --config.data.dir=$(DATA)/interpatient --config.data.extra_train=$(DATA)/interpatient_lead2/heart_big_train.parq --config.train.seed=$* --workdir runs/interpatient-seed$*

interpatient-ensemble: runs/interpatient-best/best.json runs/interpatient-seed1/best.json runs/interpatient-seed2/best.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-seed1 --data $(DATA)/interpatient/heart_big_test.parq --json > reports/interpatient_seed1_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-seed2 --data $(DATA)/interpatient/heart_big_test.parq --json > reports/interpatient_seed2_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-best runs/interpatient-seed1 runs/interpatient-seed2 --data $(DATA)/interpatient/heart_big_test.parq --json > reports/interpatient_ensemble_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/interpatient-best runs/interpatient-seed1 runs/interpatient-seed2 --data $(DATA)/interpatient/heart_big_test.parq --plot reports/interpatient_ensemble_cm.png

# The new-patient model annotates the 22 DS2 records from their raw signals alone (its own QRS
# detection, no reference positions), then heartjax.score compares with the .atr (EC57).
DS2 := 100 103 105 111 113 117 121 123 200 202 210 212 213 214 219 221 222 228 231 232 233 234
annotate-ds2: runs/interpatient-best/best.json
	$(PY) -m heartjax.annotate $(addprefix $(MITDB)/,$(DS2)) --checkpoint runs/interpatient-best --out runs/annotate-ds2 --plot 600:612
	$(PY) -m heartjax.score --records $(MITDB) --test-dir runs/annotate-ds2 $(DS2) --json > reports/annotate_ds2.json
	$(PY) -m heartjax.score --records $(MITDB) --test-dir runs/annotate-ds2 $(DS2) | tee reports/annotate_ds2.txt

# the same with the three seeds' ensemble (the mean of their probabilities)
ENSEMBLE := runs/interpatient-best runs/interpatient-seed1 runs/interpatient-seed2
annotate-ds2-ensemble: $(addsuffix /best.json,$(ENSEMBLE))
	$(PY) -m heartjax.annotate $(addprefix $(MITDB)/,$(DS2)) --checkpoint $(ENSEMBLE) --out runs/annotate-ds2-ensemble
	$(PY) -m heartjax.score --records $(MITDB) --test-dir runs/annotate-ds2-ensemble $(DS2) --json > reports/annotate_ds2_ensemble.json
	$(PY) -m heartjax.score --records $(MITDB) --test-dir runs/annotate-ds2-ensemble $(DS2) | tee reports/annotate_ds2_ensemble.txt

# Cross-validation by records on DS1 (4 folds, every DS1 record validates once; DS2 unread):
# the variants of :interpatient, out-of-fold, pooled -> reports/crossval (~75 min here; the second
# seed -> reports/crossval_seed1); test-time batch-norm adaptation on the shipped folds' models
# -> reports/crossval_adapt_norm (3 min); the earlier config -> reports/crossval_first_trial
# (70 min); the band-passed tables -> reports/crossval_bandpass (10 min); the rhythm features
# -> reports/crossval_rhythm (~28 min; the second seed -> reports/crossval_rhythm_seed1, ~13 min);
# the size features -> reports/crossval_size (10 min). These ran before :interpatient drew the
# records alike ($(UNBALANCED)). The record balance -> reports/crossval_balance (12 min; the
# second seed -> reports/crossval_balance_seed1, 6 min); the beat against its record's median
# beat -> reports/crossval_median_diff (18 min); the records drawn alike in some classes only ->
# reports/crossval_balance_classes (12 min). Every fold model here chose its epoch with one mix
# for all classes (the CROSSVAL line); V's own mix is scored on those models without training
# again -> reports/crossval_mix_by_class, _seed1, _unbalanced (2 min each). :interpatient as it
# is, its fold models choosing their epochs with V's own mix -> reports/crossval_shipped (9 min;
# the second seed -> reports/crossval_shipped_seed1, 5 min). The rhythm's irregularity alone and
# made-up atrial fibrillation in training -> reports/crossval_irregularity (25 min; the second
# seed -> reports/crossval_irregularity_seed1, 5 min); the third seed of :interpatient ->
# reports/crossval_shipped_seed2 (5 min). Electrode-motion augmentation -> reports/crossval_motion
# (10 min; the second and third seeds -> reports/crossval_motion_seed1, _seed2, 5 min each).
UNBALANCED := --config.train.record_balance=0
CROSSVAL_SHIPPED := $(PY) experiments/crossval.py --data-dir $(DATA)/interpatient --lead2 $(DATA)/interpatient_lead2/heart_big_train.parq
CROSSVAL := $(CROSSVAL_SHIPPED) --config.model.morph_mix_by_class='()'
MIX_BY_CLASS := --mix 0.75:0.75:0.3:0.75:0.75,0.75:0.75:0.4:0.75:0.75,0.75:0.75:0.5:0.75:0.75
BANDPASS := $(DATA)/interpatient_bandpass/heart_big_train.parq $(DATA)/interpatient_bandpass_lead2/heart_big_train.parq
crossval: setup data-interpatient $(BANDPASS)
	$(CROSSVAL) --variants shipped,mlii,rr_seconds,rr_seconds_mlii,rr_seconds_full_balance,morph_0.8,s_weight_2 --mix 0.5,0.6,0.9 $(UNBALANCED) --out reports/crossval
	$(CROSSVAL) --variants shipped,rr_seconds --seed 1 $(UNBALANCED) --out reports/crossval_seed1
	$(CROSSVAL) --variants shipped --adapt-norm 0.5,1 $(UNBALANCED) --out reports/crossval_adapt_norm
	$(CROSSVAL) --variants first_trial_ratios,first_trial,shipped --mix 0.5 $(UNBALANCED) --out reports/crossval_first_trial
	$(PY) experiments/crossval.py --data-dir $(DATA)/interpatient_bandpass --lead2 $(DATA)/interpatient_bandpass_lead2/heart_big_train.parq \
	  --variants shipped --work runs/experiments/crossval_bandpass $(UNBALANCED) --config.model.morph_mix_by_class='()' --out reports/crossval_bandpass
	$(CROSSVAL) --variants shipped,rhythm,rhythm_s_weight_2,rhythm_morph_0.8 --mix 0.5,0.6,0.9 --work runs/experiments/crossval_rhythm $(UNBALANCED) --out reports/crossval_rhythm
	$(CROSSVAL) --variants shipped,rhythm --seed 1 --work runs/experiments/crossval_rhythm $(UNBALANCED) --out reports/crossval_rhythm_seed1
	$(CROSSVAL) --variants shipped,size --mix 0.5,0.6,0.9 $(UNBALANCED) --work runs/experiments/crossval_size --out reports/crossval_size
	$(CROSSVAL) --variants record_balance,record_balance_0.5 --mix 0.5,0.6,0.9 --work runs/experiments/crossval_balance --out reports/crossval_balance
	$(CROSSVAL) --variants record_balance --seed 1 --work runs/experiments/crossval_balance --out reports/crossval_balance_seed1
	$(CROSSVAL) --variants median_diff,median_diff_morph_0.7,median_diff_morph_0.5 --mix 0.5,0.6,0.9 --work runs/experiments/crossval_median_diff --out reports/crossval_median_diff
	$(CROSSVAL) --variants balance_but_v,balance_s --mix 0.5,0.6,0.9 --work runs/experiments/crossval_balance_classes --out reports/crossval_balance_classes
	$(CROSSVAL) --variants record_balance $(MIX_BY_CLASS) --work runs/experiments/crossval_balance --out reports/crossval_mix_by_class
	$(CROSSVAL) --variants record_balance --seed 1 $(MIX_BY_CLASS) --work runs/experiments/crossval_balance --out reports/crossval_mix_by_class_seed1
	$(CROSSVAL) --variants shipped $(UNBALANCED) $(MIX_BY_CLASS) --work runs/experiments/crossval_rhythm --out reports/crossval_mix_by_class_unbalanced
	$(CROSSVAL_SHIPPED) --variants shipped --mix 0.75 --work runs/experiments/crossval_shipped --out reports/crossval_shipped
	$(CROSSVAL_SHIPPED) --variants shipped --seed 1 --mix 0.75 --work runs/experiments/crossval_shipped --out reports/crossval_shipped_seed1
	$(CROSSVAL_SHIPPED) --variants irregularity,irregular_copies_0.1,irregular_copies,irregular_copies_0.4,rhythm_irregular_copies --mix 0.75 --work runs/experiments/crossval_irregularity --out reports/crossval_irregularity
	$(CROSSVAL_SHIPPED) --variants irregular_copies --seed 1 --mix 0.75 --work runs/experiments/crossval_irregularity --out reports/crossval_irregularity_seed1
	$(CROSSVAL_SHIPPED) --variants shipped --seed 2 --mix 0.75 --work runs/experiments/crossval_shipped --out reports/crossval_shipped_seed2
	$(CROSSVAL_SHIPPED) --variants motion_0.1,motion_0.2 --mix 0.75 --work runs/experiments/crossval_motion --out reports/crossval_motion
	$(CROSSVAL_SHIPPED) --variants motion_0.2 --seed 1 --mix 0.75 --work runs/experiments/crossval_motion --out reports/crossval_motion_seed1
	$(CROSSVAL_SHIPPED) --variants motion_0.2 --seed 2 --mix 0.75 --work runs/experiments/crossval_motion --out reports/crossval_motion_seed2

# The new-patient model and its three seeds' ensemble on recordings unlike MIT-BIH's MLII: DS2
# cut from the second channel, DS2 resampled to 250 and 500 Hz, the PTB normal beats.
ENSEMBLE := runs/interpatient-best runs/interpatient-seed1 runs/interpatient-seed2
proxies: $(addsuffix /best.json,$(ENSEMBLE)) | data-interpatient
	$(PY) experiments/proxies.py --model interpatient=runs/interpatient-best --model ensemble=runs/interpatient-best,runs/interpatient-seed1,runs/interpatient-seed2 \
	  --raw $(MITDB) --ds2 $(DATA)/interpatient/heart_big_test.parq --ptb-sample $(PTB_SAMPLE) --work $(DATA)/proxies --out reports/proxies

# gqrs against xqrs on the DS1 records: which detector heartjax.annotate uses.
qrs-detectors: setup
	$(PY) experiments/qrs_detectors.py --records-dir $(MITDB) --out reports/qrs_detectors.json

# PTB with transfer (configs/ptb.py:best): the MIT-BIH source model, then the PTB fine-tune and
# its test metrics (with the threshold chosen on validation) in reports/ptb_best_test.json.
runs/mitbih-source/best.json: | setup data
	$(PY) -m heartjax.train --config configs/mitbih.py --config.train.epochs=8 --workdir runs/mitbih-source

runs/ptb-best/best.json: | setup data-ptb runs/mitbih-source/best.json
	$(PY) -m heartjax.train --config configs/ptb.py:best --workdir runs/ptb-best

ptb-best: runs/ptb-best/best.json
	$(PY) -m heartjax.evaluate --checkpoint runs/ptb-best --data $(DATA)/ptb/heart_test.parq --json > reports/ptb_best_test.json
	$(PY) -m heartjax.evaluate --checkpoint runs/ptb-best --data $(DATA)/ptb/heart_test.parq

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check heartjax configs experiments tests notebooks

clean:
	rm -rf $(VENV) .pytest_cache
