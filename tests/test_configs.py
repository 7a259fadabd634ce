"""Config variants compose left to right; an unknown one is one line."""

import pytest

from heartjax.cli import load_config
from heartjax.errors import UserError


def test_variants_compose():
    c = load_config("configs/mitbih.py:interpatient,smoke")
    assert c.model.morph_dropout == 0.8 and c.model.use_template  # from :interpatient
    assert c.model.num_blocks == 1 and c.train.epochs == 2  # :smoke applied after it
    assert load_config("configs/mitbih.py:cnn2d,smoke").model.name == "cnn2d"
    tuned = load_config("configs/ptb.py:tune_cnn2d")
    assert tuned.model.name == "cnn2d" and tuned.tune.train_original


@pytest.mark.parametrize("spec", ["configs/mitbih.py:best,huge", "configs/ptb.py:huge"])
def test_unknown_variant_names_the_known_ones(spec):
    with pytest.raises(UserError, match="no variant 'huge'.*smoke"):
        load_config(spec)
