"""Sweep expansion helpers (h.sweep / h.product / h.zip / h.fixed / h.chain) and run names."""

import os
import re

import pytest

from launch import sweeping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_CONFIG = os.path.join(REPO, "tests", "sweep_example_config.py")


@pytest.fixture
def h():
    return sweeping.Hyper()


def test_sweep_and_fixed_strip_config_prefix(h):
    assert h.sweep("config.a.b", [1, 2]) == [{"a.b": 1}, {"a.b": 2}]
    assert h.fixed("a.c", "x") == [{"a.c": "x"}]


def test_product_is_cartesian_last_fastest(h):
    runs = h.product([h.sweep("a", [1, 2]), h.sweep("b", ["x", "y", "z"])])
    assert len(runs) == 6
    assert runs[0] == {"a": 1, "b": "x"} and runs[1] == {"a": 1, "b": "y"} and runs[-1] == {"a": 2, "b": "z"}
    assert len({tuple(sorted(r.items())) for r in runs}) == 6


def test_zip_pairs_elementwise_and_checks_lengths(h):
    runs = h.zip([h.sweep("a", [1, 2]), h.sweep("b", [10, 20])])
    assert runs == [{"a": 1, "b": 10}, {"a": 2, "b": 20}]
    with pytest.raises(ValueError, match="equal length"):
        h.zip([h.sweep("a", [1, 2]), h.sweep("b", [1])])


def test_chain_and_nested(h):
    runs = h.chain([h.fixed("a", 0), h.product([h.zip([h.sweep("a", [1, 2]), h.sweep("b", [3, 4])]),
                                                h.sweep("c", [5, 6])])])
    assert len(runs) == 5 and runs[0] == {"a": 0} and runs[1] == {"a": 1, "b": 3, "c": 5}


def test_same_key_twice_is_refused(h):
    with pytest.raises(ValueError, match="same key 'a'"):
        h.product([h.sweep("a", [1]), h.sweep("config.a", [2])])
    with pytest.raises(ValueError, match="no values"):
        h.sweep("a", [])


def test_run_names_are_deterministic_safe_and_unique():
    odd = {"data.data_dir": "/tmp/a b/c", "model.channel_mults": (1, 2, 2), "x.lr": 3e-4}
    name = sweeping.run_name(7, odd)
    assert name == sweeping.run_name(7, dict(odd))
    assert name.startswith("007-")
    assert re.fullmatch(r"[A-Za-z0-9._=+-]+", name), name
    assert "/" not in name and " " not in name
    long = sweeping.run_name(1, {f"k{i}": "v" * 30 for i in range(10)})
    assert len(long) <= sweeping.MAX_NAME
    assert long != sweeping.run_name(1, {f"k{i}": "w" * 30 for i in range(10)})


def test_format_value_round_trips_through_parse_value():
    for v in (3e-4, 32, True, "cosine", (1, 2, 2), (8,)):
        assert sweeping.parse_value(sweeping.format_value(v)) == v


def test_make_runs_on_test_config_validates_and_builds_flags(monkeypatch):
    monkeypatch.chdir(REPO)
    runs = sweeping.make_runs(TEST_CONFIG, {"training.log_every": 1})
    assert len(runs) == 4
    assert runs[0].overrides == {"optimizer.learning_rate": 1e-4, "optimizer.warmup_steps": 1,
                                 "model.base_channels": 8, "training.num_train_steps": 2}
    assert "--config.model.base_channels=16" in runs[1].flags
    assert "--config.training.log_every=1" in runs[3].flags
    assert len({r.name for r in runs}) == 4
    assert all("num_train_steps" not in r.name for r in runs)  # fixed keys stay out of the names
    assert runs[0].name == "000-learning_rate=0.0001-warmup_steps=1-base_channels=8"


def test_make_runs_refuses_bad_keys_and_clashes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = tmp_path / "bad.py"
    bad.write_text("from configs import moving_digits\n"
                   "def get_config(arg=None):\n    return moving_digits.get_config('smoke')\n"
                   "def get_hyper(h):\n    return h.sweep('config.model.no_such_field', [1, 2])\n")
    with pytest.raises(ValueError, match="no_such_field"):
        sweeping.make_runs(str(bad))
    with pytest.raises(ValueError, match="clashes"):
        sweeping.make_runs(TEST_CONFIG, {"model.base_channels": 4})
    invalid = tmp_path / "invalid.py"
    invalid.write_text(bad.read_text().replace("model.no_such_field', [1, 2]",
                                               "training.num_train_steps', [1, 0]"))
    with pytest.raises(ValueError, match="num_train_steps"):
        sweeping.make_runs(str(invalid))
