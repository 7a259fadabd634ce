"""The models that ship with heartjax: loaded by name, and used by a fresh install's annotate."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

import heartjax
from heartjax.checkpoint import Ensemble
from heartjax.errors import UserError
from heartjax.pretrained import MODELS, export, load, members, pretrained
from tests.conftest import REPO
from tests.test_recordings import write_edf


def test_the_new_patient_model_ships_with_heartjax():
    model = heartjax.load_checkpoint("interpatient")
    assert isinstance(model, Ensemble) and len(model.members) == len(members("interpatient")) >= 1
    assert model.class_names == ("N", "S", "V", "F", "Q")
    assert set(model.members[0].config.data.train_files) >= {
        "data/interpatient/heart_big_train.parq", "data/svdb/heart_big_all.parq"}
    card = (members("interpatient")[0].parent / "MODEL.md").read_text()
    for needle in ("Open Data Commons Attribution", "Moody", "Greenwald", "Goldberger"):
        assert needle in card
    size = sum(f.stat().st_size for f in members("interpatient")[0].parent.rglob("*"))
    assert size < 5e6  # a few MB at most
    assert pretrained().class_names == model.class_names


def test_a_path_wins_over_a_packaged_name_and_unknown_names_say_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "interpatient").mkdir()  # a local folder of that name is what the user means
    with pytest.raises(UserError, match="no heartjax checkpoint found"):
        load(["interpatient"])
    with pytest.raises(UserError, match="does not exist"):
        load(["no-such-model"])
    assert "interpatient" in MODELS


def test_export_copies_each_runs_best_checkpoint(mitbih_model, tmp_path):
    out = export([mitbih_model, mitbih_model], "interpatient", root=tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["seed0", "seed1"]
    with pytest.raises(UserError, match="does not exist"):
        export([tmp_path / "missing"], "interpatient", root=tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["seed0", "seed1"]  # nothing replaced


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built as a wheel (pip, as a user installs it) and unpacked into a folder
    of its own: what a fresh install holds, without the repository's files."""
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO),
                    "-w", str(wheels)], check=True, capture_output=True, timeout=600)
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(next(wheels.glob("heartjax-*.whl"))) as wheel:
        wheel.extractall(site)
    return site


def test_a_fresh_install_annotates_208_and_its_edf_and_csv_copies_alike(
        fresh_install, mitdb_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(fresh_install)}

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)

    where = run("-c", "import heartjax; print(heartjax.__file__)")
    assert where.stdout.strip().startswith(str(fresh_install)), where.stdout + where.stderr
    rec = wfdb.rdrecord(str(mitdb_dir / "208"), channel_names=["MLII"])
    signal = rec.p_signal[:, 0]
    write_edf(tmp_path / "208_edf.edf", {"MLII": signal}, 360)
    pd.DataFrame({"MLII": signal}).to_csv(tmp_path / "208_csv.csv", index=False,
                                          float_format="%.3f")
    result = run("-m", "heartjax.annotate", mitdb_dir / "208", "208_edf.edf", "208_csv.csv",
                 "--fs", "360", "--out", "out")  # no --checkpoint: the packaged model
    assert result.returncode == 0, result.stderr[-3000:]
    tables = [pd.read_csv(tmp_path / "out" / f"{name}.csv") for name in ("208", "208_edf", "208_csv")]
    for table in tables[1:]:
        assert np.array_equal(table["sample"], tables[0]["sample"])
        assert (table["class"] == tables[0]["class"]).all()
    # 208 holds 2,955 annotated beats, 992 of them V: the packaged model finds most of them
    reference = wfdb.rdann(str(mitdb_dir / "208"), "atr")
    assert abs(len(tables[0]) - 2955) < 60
    assert (tables[0]["class"] == "V").sum() > 0.8 * sum(s == "V" for s in reference.symbol)
