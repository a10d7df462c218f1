"""The [dedup] section of the config: verify_threshold defaults to the band threshold and is validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthfilter.config import Config, ConfigError, load_config


def test_verify_threshold_defaults_to_the_band_threshold():
    cfg = Config()
    assert cfg.dedup.verify_threshold is None and cfg.dedup.verify_at == cfg.dedup.threshold == 0.8
    cfg = Config.from_dict({"dedup": {"threshold": 0.9}})
    assert cfg.dedup.verify_at == 0.9


def test_verify_threshold_from_toml_and_overrides(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[dedup]\nthreshold = 0.8\nverify_threshold = 0.85\n")
    cfg = load_config(path)
    assert (cfg.dedup.threshold, cfg.dedup.verify_threshold, cfg.dedup.verify_at) == (0.8, 0.85, 0.85)
    cfg = load_config(path, {"dedup": {"verify_threshold": 1}})
    assert cfg.dedup.verify_threshold == 1.0 and isinstance(cfg.dedup.verify_threshold, float)
    assert cfg.to_dict()["dedup"]["verify_threshold"] == 1.0


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.01, True, "0.9", [0.9]])
def test_verify_threshold_outside_0_1_or_not_a_number_is_refused(bad):
    with pytest.raises(ConfigError, match="dedup.verify_threshold"):
        Config.from_dict({"dedup": {"verify_threshold": bad}})


def test_an_unknown_option_names_the_closest_one_or_lists_them(tmp_path: Path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[dedup]\ntreshold = 0.7\n")
    with pytest.raises(ConfigError, match=r"c.toml: unknown option dedup.treshold; did you mean dedup.threshold\?"):
        load_config(cfg, {})
    with pytest.raises(ConfigError, match=r"unknown option zzz; the options of the top level are annotate, batch_size"):
        Config.from_dict({"zzz": 1})
    with pytest.raises(ConfigError, match=r"unknown option ratio.nope; the options of \[ratio\] are bootstrap, confidence"):
        Config.from_dict({"ratio": {"nope": 1}})
