"""Config variants compose left to right; an unknown one is one line."""

import pytest

from heartjax.cli import load_config
from heartjax.config import validate
from heartjax.errors import UserError


def test_variants_compose():
    c = load_config("configs/mitbih.py:interpatient,smoke")
    assert c.model.morph_dropout == 0.9 and c.model.context == ("rr", "template")  # :interpatient
    assert c.model.num_blocks == 1 and c.train.epochs == 2  # :smoke applied after it
    assert load_config("configs/mitbih.py:cnn2d,smoke").model.name == "cnn2d"
    tuned = load_config("configs/ptb.py:tune_cnn2d")
    assert tuned.model.name == "cnn2d" and tuned.tune.train_original


@pytest.mark.parametrize("spec", ["configs/mitbih.py:best,huge", "configs/ptb.py:huge"])
def test_unknown_variant_names_the_known_ones(spec):
    with pytest.raises(UserError, match="no variant 'huge'.*smoke"):
        load_config(spec)


def test_the_new_patient_protocol_chooses_on_ds1_records_only():
    c = load_config("configs/mitbih.py:tune_interpatient")
    assert c.data.dir == "data/interpatient" and c.data.val_by == "records"
    assert c.tune.metric == "val_nsv_recall" and c.train.select_metric == "nsv_recall"
    assert "morph_dropout" in c.tune.search_space.model and c.tune.start_points == ({},)


def test_nsv_recall_needs_the_mitbih_classes():

    c = load_config("configs/ptb.py")
    c.train.select_metric = "nsv_recall"
    with pytest.raises(UserError, match="nsv_recall.*N, S, V"):
        validate(c)


def test_extra_training_leads_need_validation_by_records():

    c = load_config("configs/mitbih.py")
    c.data.extra_train = "data/interpatient_lead2/heart_big_train.parq"
    with pytest.raises(UserError, match="extra_train needs data.val_by='records'"):
        validate(c)
    c.data.val_by = "records"
    validate(c)


def test_record_balance_is_a_share():

    c = load_config("configs/mitbih.py")
    c.train.record_balance = 1.5
    with pytest.raises(UserError, match="record_balance=1.5 must be in"):
        validate(c)
    c.train.record_balance = 1.0
    c.train.record_balance_classes = ("S", "X")
    with pytest.raises(UserError, match="record_balance_classes=.*must name classes of mitbih"):
        validate(c)


def test_the_new_patient_model_learns_from_both_databases_and_both_leads():
    c = load_config("configs/mitbih.py:interpatient")
    assert c.data.train_files == ("data/interpatient/heart_big_train.parq",
                                  "data/svdb/heart_big_all.parq")
    assert c.data.extra_train.split(",") == ["data/interpatient_lead2/heart_big_train.parq",
                                             "data/svdb_lead2/heart_big_all.parq"]
    validate(c)
    ds1 = load_config("configs/mitbih.py:interpatient_ds1")
    assert ds1.data.train_files == () and ds1.data.extra_train == \
        "data/interpatient_lead2/heart_big_train.parq"
    assert ds1.train.to_dict() == c.train.to_dict()
    assert c.model.morph_mix == (0.6, 0.6, 0.3, 0.6, 0.6)  # chosen over both databases
    assert ds1.model.morph_mix == (0.75, 0.75, 0.4, 0.75, 0.75)  # chosen on DS1
    ds1.model.morph_mix = c.model.morph_mix
    assert ds1.model.to_dict() == c.model.to_dict()


def test_the_search_starts_from_one_mix_for_every_class():
    c = load_config("configs/mitbih.py:tune_interpatient")
    assert c.model.morph_mix == (0.75,) and load_config(
        "configs/mitbih.py:interpatient").model.morph_mix == (0.6, 0.6, 0.3, 0.6, 0.6)
