"""Real recorder noise (heartjax.noise): the noise bank from the real nstdb records, the
real-noise augmentation at its SNR, a run with it off unchanged to the bit, its config and
input errors, the nst construction against nstdb's 118e00 and 118e_6, and the EC57 noise
stress test (`python -m heartjax.score stress`) end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import wfdb

from heartjax import noise as nz
from heartjax import steps
from heartjax.config import base_config, migrate, validate
from heartjax.errors import UserError
from tests.conftest import assert_one_line_error, run_data_cli, run_module

OFF = {"scale": 0.0, "noise": 0.0, "wander": 0.0, "motion": 0.0, "shift": 0, "stretch": 0.0}
ALL_ON = {"scale": 0.1, "noise": 0.02, "wander": 0.05, "motion": 0.1, "shift": 3, "stretch": 0.05}
# augment's output and a train chunk's parameters with ALL_ON, as heartjax computed them before
# real noise came (commit 8f18f69, jax 0.10.2, CPU): real_noise=0 must not change a bit
GOLDEN_JAX = "0.10.2"
GOLDEN_AUGMENT = "115a8273e0377d26fb1153642801878b9e7776daadfe2dd470094b6a218c646a"
GOLDEN_CHUNK = "29ee407af769539cc4c6fe2110cbe6f3d814a33aeb7aadea3da4b0cf585eadec"


def _sha(*arrays) -> str:
    return hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in arrays)).hexdigest()


def write_bank(path: Path, seed: int = 0, samples: int = 5000) -> Path:
    """A small noise bank file of the real one's layout: three kinds, 2 channels, 125 Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / nz.BANK_FS
    arrays = {"bw": np.stack([np.sin(2 * np.pi * 0.3 * t), np.cos(2 * np.pi * 0.2 * t)]),
              "ma": 0.1 * rng.standard_normal((2, samples)),
              "em": np.cumsum(0.05 * rng.standard_normal((2, samples // 2)), axis=1)}
    np.savez(path, fs=np.asarray(nz.BANK_FS), **{k: v.astype(np.float32) for k, v in arrays.items()})
    return path


@pytest.fixture
def bank(tmp_path) -> nz.NoiseBank:
    return nz.load_bank(write_bank(tmp_path / "noise.npz"))


def _beats(n: int = 512) -> np.ndarray:
    """Upright beats with their zero padding from sample 150 on."""
    t = np.arange(187)
    x = np.tile(0.3 + 0.6 * np.exp(-0.5 * ((t - 10) / 3.0) ** 2), (n, 1)).astype(np.float32)
    x[:, 150:] = 0.0
    return x


def _augment(x, bank, seed=0, **on):
    a = ml_collections.ConfigDict({**OFF, "real_noise": 0.0, "real_noise_snr": (0.0, 24.0), **on})
    return np.asarray(steps.augment(jnp.asarray(x), jax.random.PRNGKey(seed), a, bank))


def _snr_db(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    beat, added = x[:, :150], (out - x)[:, :150]
    return 10 * np.log10((beat.max(1) - beat.min(1)) ** 2 / 8 / (added ** 2).mean(1))


def test_noise_bank_is_built_from_the_real_nstdb_records(nstdb_dir, tmp_path):
    result = run_data_cli("build", "noise", "--raw", nstdb_dir, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    progress = [ln for ln in result.stderr.splitlines() if ln.startswith("[")]
    assert len(progress) == 3 and "em: em_est118" in progress[2], result.stderr
    path = tmp_path / nz.BANK_FILE
    assert path.stat().st_size < 5 * 2**20 and "MiB" in result.stdout
    arrays = nz.read_bank(path)
    assert {k: v.shape for k, v in arrays.items()} == {
        "bw": (2, 225_695), "ma": (2, 225_695), "em": (2, 98_195)}  # 30 min and 13.1 min at 125 Hz
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in arrays.values())
    # in mV: muscle noise is about 0.2 mV RMS; each em window's constant is gone
    assert 0.1 < arrays["ma"].std() < 0.4 and abs(arrays["em"].mean()) < 1e-3
    loaded = nz.load_bank(path)
    assert loaded.signal.shape == (3, 2, 225_695) and loaded.length.tolist() == [225_695] * 2 + [98_195]


def test_real_noise_reaches_the_requested_snr(bank):
    x = _beats()
    out = _augment(x, bank, real_noise=1.0, real_noise_snr=(12.0, 12.0))
    np.testing.assert_allclose(_snr_db(x, out), 12.0, atol=0.01)
    assert np.abs(out[:, 150:]).max() == 0.0  # the zero padding stays zero
    spread = _snr_db(x, _augment(x, bank, real_noise=1.0, real_noise_snr=(0.0, 24.0)))
    assert spread.min() >= -0.01 and spread.max() <= 24.01 and spread.std() > 5  # uniform in dB
    half = _augment(x, bank, real_noise=0.5)
    changed = (half != x).any(axis=1).mean()
    assert 0.4 < changed < 0.6  # the share of beats
    # every kind is drawn: bw (slow sines) and ma (white) segments differ in smoothness
    added = (_augment(x, bank, real_noise=1.0) - x)[:, :150]
    roughness = np.abs(np.diff(added, axis=1)).mean(1) / added.std(1)
    assert roughness.min() < 0.05 and roughness.max() > 0.5


def test_real_noise_off_changes_no_bit(bank):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(64, 187)).astype(np.float32))
    key = jax.random.PRNGKey(3)
    before = steps.augment(x, key, ml_collections.ConfigDict(ALL_ON))  # no real-noise fields
    off = steps.augment(x, key, ml_collections.ConfigDict(
        {**ALL_ON, "real_noise": 0.0, "real_noise_snr": (0.0, 24.0)}), bank)
    np.testing.assert_array_equal(np.asarray(before), np.asarray(off))
    # a train chunk with every other augmentation on, and the real noise off
    c = base_config("mitbih", "cnn1d")
    c.train.augment.update(ALL_ON)
    c.train.batch_size = 16
    state = steps.build_program(c, 64, 5).create(0)
    data = steps.Arrays(x, jnp.asarray(np.arange(64) % 5, jnp.int32), jnp.zeros((64, 0)))
    perm = jnp.asarray(rng.permutation(64).reshape(4, 16))
    state, _ = steps.make_train_chunk(c.train)(state, data, perm, jnp.ones(5))
    if jax.__version__ != GOLDEN_JAX:
        pytest.skip(f"the golden values are jax {GOLDEN_JAX}'s; this is jax {jax.__version__}")
    assert _sha(off) == GOLDEN_AUGMENT
    assert _sha(*jax.tree_util.tree_leaves(state.params)) == GOLDEN_CHUNK


def test_the_bank_is_an_argument_of_the_step_and_populations_share_it(bank, tmp_path):
    from heartjax import population

    c = base_config("mitbih", "cnn1d")
    c.train.augment.real_noise = 1.0
    c.data.noise_file = str(tmp_path / "noise.npz")  # the `bank` fixture's
    c.train.batch_size = 16
    program = steps.build_program(c, 64, 5)
    x = jnp.asarray(_beats(64))
    data = steps.Arrays(x, jnp.asarray(np.arange(64) % 5, jnp.int32), jnp.zeros((64, 0)))
    perm = jnp.asarray(np.arange(64).reshape(4, 16))
    chunk = steps.make_train_chunk(c.train)
    other = nz.load_bank(write_bank(tmp_path / "other.npz", seed=1))
    losses = [float(chunk(program.create(0), data, perm, jnp.ones(5), b)[1]) for b in (bank, other)]
    assert losses[0] != losses[1] and chunk._cache_size() == 1  # one program, two banks
    configs = population.member_configs(c, [{"train.seed": 0}, {"train.seed": 1}])
    states = population.create_population_state(program.create, configs)
    _, loss = population.make_population_chunk(c.train)(states, data, perm, jnp.ones((2, 5)), bank)
    assert loss.shape == (2,) and np.isfinite(loss).all()


@pytest.mark.parametrize("augment, needle", [
    ({"real_noise": 1.5}, "real_noise=1.5 must be in [0, 1]"),
    ({"real_noise": -0.1}, "real_noise=-0.1"),
    ({"real_noise_snr": (24.0, 0.0)}, "real_noise_snr"),
    ({"real_noise_snr": (6.0,)}, "real_noise_snr"),
    ({"real_noise": 0.5}, "build noise"),  # no data.noise_file
])
def test_bad_real_noise_configs_are_one_line(augment, needle):
    c = base_config("mitbih", "cnn1d")
    c.train.augment.update(augment)
    with pytest.raises(UserError) as e:
        validate(c)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_config_saved_before_real_noise_gets_its_defaults():
    saved = json.loads(base_config("mitbih", "cnn1d").to_json_best_effort())
    del saved["data"]["noise_file"]
    del saved["train"]["augment"]["real_noise"], saved["train"]["augment"]["real_noise_snr"]
    c = migrate(saved)
    assert c["data"]["noise_file"] == "" and c["train"]["augment"]["real_noise"] == 0.0
    assert tuple(c["train"]["augment"]["real_noise_snr"]) == (0.0, 24.0)


def test_bad_noise_inputs_are_one_line_and_exit_2(synthetic_dir, tmp_path):
    assert_one_line_error(run_data_cli("build", "noise", "--raw", tmp_path / "nope",
                                       "--out", tmp_path), "nope", "download noise")
    raw = tmp_path / "raw"
    raw.mkdir()
    sig = np.random.default_rng(0).standard_normal((3600, 2))
    for name in ("bw", "ma"):
        wfdb.wrsamp(name, fs=360, units=["mV"] * 2, sig_name=["noise1", "noise2"], p_signal=sig,
                    fmt=["16"] * 2, write_dir=str(raw))
    assert_one_line_error(run_data_cli("build", "noise", "--raw", raw, "--out", tmp_path),
                          "em_est118.hea not found")
    (raw / "ma.dat").write_bytes((raw / "ma.dat").read_bytes()[:100])
    assert_one_line_error(run_data_cli("build", "noise", "--raw", raw, "--out", tmp_path),
                          "ma", "truncated")
    # training with real noise: a missing bank and a file that is no bank
    train = ("--config", "configs/ptb.py:smoke", f"--config.data.dir={synthetic_dir / 'ptb'}",
             "--config.train.augment.real_noise=0.5", "--workdir", tmp_path / "run")
    assert_one_line_error(run_module("heartjax.train", *train,
                                     f"--config.data.noise_file={tmp_path / 'none.npz'}"),
                          "none.npz", "build noise")
    (tmp_path / "bad.npz").write_bytes(b"not a bank")
    assert_one_line_error(run_module("heartjax.train", *train,
                                     f"--config.data.noise_file={tmp_path / 'bad.npz'}"),
                          "bad.npz", "not a noise bank")


def test_training_with_real_noise_runs(synthetic_dir, tmp_path):
    from heartjax.cli import load_config
    from heartjax.train import train_and_evaluate

    c = load_config("configs/ptb.py:smoke")
    c.data.dir = str(synthetic_dir / "ptb")
    c.data.noise_file = str(write_bank(tmp_path / "noise.npz"))
    c.train.augment.real_noise = 0.5
    c.train.epochs = 1
    best = train_and_evaluate(c, tmp_path / "run", progress=False)
    assert best["epoch"] == 1 and np.isfinite(best["val"]["macro_recall"])


@pytest.mark.parametrize("members", [None, [{"train.seed": 0}, {"train.seed": 1}]],
                         ids=["one", "population"])
def test_a_fold_batched_ladder_trains_with_real_noise(tmp_path, members):
    from heartjax import fidelity
    from heartjax.data import train_val_split
    from tests.test_fidelity import _ladder_config, _record_table

    table = _record_table(signal=0.3)
    folds = [train_val_split(table, 0.1, 0, "records", 3, f) for f in range(3)]
    c = _ladder_config("on")  # one program for the three folds, the bank shared by all
    c.data.noise_file = str(write_bank(tmp_path / "noise.npz"))
    c.train.augment.real_noise = 0.5
    rows = []
    fidelity.train_ladder(c, folds, rows.append, members=members)
    assert [r["rung"] for r in rows] == [0, 1] and all(np.isfinite(r["train_loss"]) for r in rows)


def construction_check(mitdb: Path, nstdb: Path) -> dict[str, dict[str, list[float]]]:
    """Record 118 with the em noise at 0 and -6 dB against nstdb's 118e00 and 118e_6, per lead
    (MLII, V1), in the noise-on windows: the RMS of the difference relative to the noise's RMS
    (as it is, and with one constant per window removed), and the SNR achieved in the windows,
    measured as nst measures (S = A^2/8 with A `qrs_amplitude`, N the trimmed mean square of
    one-second windows) in theirs and in ours."""
    record, ann = wfdb.rdrecord(str(mitdb / "118")), wfdb.rdann(str(mitdb / "118"), "atr")
    clean = record.p_signal
    em = nz.read_noise(nstdb, "em")
    reference = nz.noise_reference(nstdb, em)
    windows = nz.nst_windows(len(clean), record.fs)
    out = {}
    for name, snr in (("118e00", 0), ("118e_6", -6)):
        ours = nz.stress_record(clean, record.fs, ann.sample, ann.symbol, em, reference, snr)
        theirs = wfdb.rdrecord(str(nstdb / name)).p_signal
        theirs = theirs - np.median(theirs[:windows[0][0]] - clean[:windows[0][0]], axis=0)  # nst's offset
        diff = np.concatenate([ours.signal[a:b] - theirs[a:b] for a, b in windows])
        flat = np.concatenate([d - d.mean(0) for d in
                               (ours.signal[a:b] - theirs[a:b] for a, b in windows)])
        noise_rms = np.sqrt(np.mean(np.concatenate([theirs[a:b] - clean[a:b] for a, b in windows]) ** 2, 0))

        def achieved(signal: np.ndarray, qrs: np.ndarray = ours.qrs) -> np.ndarray:
            rms = np.concatenate([(signal[a:b] - clean[a:b])[: (b - a) // 360 * 360]
                                  .reshape(-1, 360, 2).std(1) for a, b in windows])
            return 10 * np.log10(qrs ** 2 / 8 / nz._trimmed_mean(rms) ** 2)

        out[name] = {"gains": ours.gains.tolist(),
                     "relative_rms_difference": (np.sqrt((diff ** 2).mean(0)) / noise_rms).tolist(),
                     "relative_rms_difference_per_window_constants_removed":
                         (np.sqrt((flat ** 2).mean(0)) / noise_rms).tolist(),
                     "achieved_snr_theirs": achieved(theirs).tolist(),
                     "achieved_snr_ours": achieved(ours.signal).tolist()}
    return out


def test_the_nst_construction_reproduces_118e00_and_118e_6(mitdb_dir, nstdb_dir):
    check = construction_check(mitdb_dir, nstdb_dir)
    e0, e6 = check["118e00"], check["118e_6"]
    # em_est118 is 118e_6 - 118: at -6 dB the gain must come out at 1, at 0 dB at 10^(-6/20)
    np.testing.assert_allclose(e6["gains"], 1.0, rtol=1e-9)
    np.testing.assert_allclose(e0["gains"], 10 ** (-6 / 20), rtol=1e-9)
    for c in (e0, e6):
        # the same noise at the same samples: all that differs is one constant per window (the
        # unknown one-sample step of the noise where each window starts) and 118e00's rounding
        assert max(c["relative_rms_difference"]) < 0.2
        assert max(c["relative_rms_difference_per_window_constants_removed"]) < 2e-3
        np.testing.assert_allclose(c["achieved_snr_ours"], c["achieved_snr_theirs"], atol=0.02)
    assert max(e6["relative_rms_difference_per_window_constants_removed"]) < 1e-9
    # nst calibrates on the noise record's first 5 minutes: inside the windows em is louder
    # than that in MLII, so the achieved SNR there is below the nominal one
    assert e6["achieved_snr_theirs"][0] < -9 and e0["achieved_snr_theirs"][0] < -3


def test_score_stress_writes_its_table_and_figure(mitbih_model, mitdb_dir, nstdb_dir, tmp_path):
    out = tmp_path / "stress"
    result = run_module("heartjax.score", "stress", "118", "--records", mitdb_dir,
                        "--noise", nstdb_dir, "--checkpoint", mitbih_model, "--out", out,
                        "--snr", "12,0")
    assert result.returncode == 0, result.stderr[-3000:]
    progress = [ln for ln in result.stderr.splitlines() if "beats annotated in" in ln]
    assert [ln.split(":")[0] for ln in progress] == ["118 clean", "118e12 (118 at 12 dB)",
                                                     "118e00 (118 at 0 dB)"], result.stderr
    assert "built in" in progress[1] and "QRS Se" in progress[1]
    data = json.loads((out / "stress.json").read_text())
    assert [r["snr"] for r in data["rows"]] == [None, 12, 0]
    assert data["noise"]["record"] == "em_est118"
    clean, at12, at0 = (r["gross"] for r in data["rows"])
    assert clean["qrs"]["se"] > 0.99 and at12["qrs"]["se"] > at0["qrs"]["se"] - 0.01
    table = (out / "stress.md").read_text()
    assert "| clean |" in table and "| 12 |" in table and "| 0 |" in table
    assert (out / "stress.png").stat().st_size > 10_000
    noisy = wfdb.rdrecord(str(out / "records" / "118e00"))
    assert noisy.sig_name == ["MLII", "V1"] and noisy.sig_len == 650_000
    assert (out / "records" / "118e00.atr").read_bytes() == (mitdb_dir / "118.atr").read_bytes()
    assert_one_line_error(run_module("heartjax.score", "stress", "--records", mitdb_dir,
                                     "--noise", nstdb_dir, "--out", out, "--snr", "1.5"), "--snr")


def test_download_fetches_the_three_noise_records(tmp_path):
    def fetch(database, folder, records):
        assert database == "nstdb" and records == list(nz.KINDS)
        for r in records:
            (Path(folder) / f"{r}.hea").write_text(f"{r} 2 360 10\n")

    assert nz.download(tmp_path / "nstdb", fetch) == tmp_path / "nstdb"

    def offline(database, folder, records):
        raise ConnectionError("no route to host")

    with pytest.raises(UserError, match="downloading nstdb from PhysioNet failed"):
        nz.download(tmp_path / "other", offline)
