"""Metrics from the confusion matrix and the losses, against hand-computed values."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from heartjax import losses, metrics


def test_confusion_and_derived_metrics():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 0, 2])
    m = metrics.from_confusion(metrics.confusion_matrix(y, p, 3), ("a", "b", "c"))
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["precision"] == pytest.approx(1 / 2)
    assert m["macro_recall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["min_recall"] == pytest.approx(0.5)


def test_absent_class_does_not_enter_macro_average():
    m = metrics.from_confusion(metrics.confusion_matrix([0, 1], [0, 1], 3), ("a", "b", "c"))
    assert m["macro_recall"] == 1.0 and m["per_class"]["c"]["support"] == 0


def test_nsv_recall_is_the_mean_recall_of_n_s_v_only():
    names = ("N", "S", "V", "F", "Q")
    y = np.array([0, 0, 1, 1, 2, 3, 3])
    p = np.array([0, 1, 1, 0, 2, 0, 0])  # N 1/2, S 1/2, V 1, F 0 (left out of nsv_recall)
    m = metrics.from_confusion(metrics.confusion_matrix(y, p, 5), names)
    assert m["nsv_recall"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert m["macro_recall"] == pytest.approx((0.5 + 0.5 + 1.0 + 0.0) / 4)
    # N predicted 4 times, 1 right; S twice, 1 right; V once, right
    assert metrics.nsv_scores(m) == pytest.approx(
        {"nsv_recall": 2 / 3, "N_recall": 0.5, "N_precision": 0.25, "S_recall": 0.5,
         "S_precision": 0.5, "V_recall": 1.0, "V_precision": 1.0})
    assert "nsv_recall" not in metrics.from_confusion(np.eye(2), ("normal", "abnormal"))
    # only N beats (the PTB normal proxy): their recall alone, not diluted by absent S and V
    only_n = metrics.evaluate_predictions(np.zeros(4, int), np.eye(5)[[0, 0, 0, 2]],
                                          ("N", "S", "V", "F", "Q"))
    assert only_n["nsv_recall"] == pytest.approx(0.75)


def test_roc_auc_and_average_precision():
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.roc_auc(y, s) == pytest.approx(0.75)
    assert metrics.roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert metrics.average_precision(y, s) == pytest.approx((1 + 2 / 3) / 2)


def test_threshold_reaches_target_recall():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.clip(y * 0.3 + rng.normal(0.4, 0.2, 500), 0, 1)
    for target in (0.9, 0.97, 0.99):
        thr = metrics.threshold_for_recall(y, s, target, cap=1.0)
        assert ((s >= thr) & (y == 1)).sum() / (y == 1).sum() >= target
        # the highest such threshold: a slightly higher one misses the target
        assert ((s > thr) & (y == 1)).sum() / (y == 1).sum() < target
    # recall first: by default the rule never raises the threshold above arg-max's 0.5
    assert metrics.threshold_for_recall(y, s, 0.5) == 0.5
    assert metrics.threshold_for_recall(y, s, 0.99) < 0.5


def test_losses():
    logits = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    y = jnp.array([0, 2])
    ones = jnp.ones(3)
    ce = losses.cross_entropy(logits, y, ones)
    plain = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    np.testing.assert_allclose(ce, plain, rtol=1e-6)
    assert losses.get_loss("ce") is losses.get_loss("weighted_ce")  # the weights tell them apart
    np.testing.assert_allclose(losses.make_focal(0.0)(logits, y, ones), ce, rtol=1e-6)
    assert (losses.make_focal(2.0)(logits, y, ones) < ce).all()
    w = jnp.array([1.0, 1.0, 3.0])
    np.testing.assert_allclose(losses.cross_entropy(logits, y, w), ce * jnp.array([1, 3]),
                               rtol=1e-6)


def test_class_weights_favour_rare_classes_and_average_one():
    y = np.array([0] * 90 + [1] * 9 + [2] * 1)
    w = losses.class_weights(y, 3, power=1.0)
    assert w[2] > w[1] > w[0]
    assert (w[y]).mean() == pytest.approx(1.0)
    np.testing.assert_allclose(losses.class_weights(y, 3, power=0.0), 1.0)


def test_class_weight_cap_bounds_the_rarest_class():
    y = np.array([0] * 900 + [1] * 90 + [2] * 2)
    w = losses.class_weights(y, 3, power=1.0, cap=20.0)
    assert w[2] / w[0] == pytest.approx(20.0) and w[1] / w[0] == pytest.approx(10.0)
    assert (w[y]).mean() == pytest.approx(1.0)  # still averages one over the beats
    np.testing.assert_allclose(losses.class_weights(y, 3, power=1.0, cap=1000.0),
                               losses.class_weights(y, 3, power=1.0))  # a loose cap changes nothing


def test_record_sampling_draws_a_classs_records_alike():
    y = np.array([0] * 90 + [0] * 10 + [1] * 4 + [1] * 1)
    records = np.array(["a"] * 90 + ["b"] * 10 + ["a"] * 4 + ["b"])
    n_share = 100 / 105
    for balance, a_share_of_n in [(0.0, 0.9), (0.5, 0.75), (1.0, 0.5)]:  # 90 : 10 -> 9^0.5 : 1 -> 1 : 1
        p = losses.record_sampling(y, records, balance)
        assert p.sum() == pytest.approx(1.0) and (p > 0).all()
        assert p[:100].sum() == pytest.approx(n_share)  # each class keeps its share of the draws
        assert p[:90].sum() / p[:100].sum() == pytest.approx(a_share_of_n)
        assert np.ptp(p[:90]) == 0 and np.ptp(p[90:100]) == 0  # alike within a record and class
    np.testing.assert_allclose(losses.record_sampling(y, records, 0.0), 1 / len(y))
    # only the classes named are drawn alike: N's records as they are, S's alike
    p = losses.record_sampling(y, records, 1.0, classes=[1])
    assert p[:90].sum() / p[:100].sum() == pytest.approx(0.9)
    assert p[100:104].sum() == pytest.approx(p[104])


def test_class_weight_scale_multiplies_one_class():
    y = np.array([0] * 900 + [1] * 90 + [2] * 10)
    plain = losses.class_weights(y, 3, power=1.0)
    scaled = losses.class_weights(y, 3, power=1.0, scale=(1.0, 3.0, 1.0))
    assert scaled[1] / scaled[2] == pytest.approx(3 * plain[1] / plain[2])
    assert scaled[0] / scaled[2] == pytest.approx(plain[0] / plain[2])
    assert (scaled[y]).mean() == pytest.approx(1.0)
    t = ml_collections.ConfigDict({"loss": "weighted_ce", "class_weight_power": 1.0,
                                   "class_weight_cap": 0.0, "class_weight_scale": (1.0, 3.0, 1.0)})
    np.testing.assert_allclose(losses.loss_weights(y, 3, t), scaled)  # what training takes
