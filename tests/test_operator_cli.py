"""Operator paper cuts: file permissions of written videos, prompt truncation warnings, one-line
errors for CLI path mistakes, and the evaluation job's write check before any compute."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import training_support as ts


def test_videos_are_written_with_the_umask_permissions(tmp_path):
    from data_pipelines.video_io import save_video
    from vdm_jax.evaluation.runner import _write_json_atomic

    previous = os.umask(0o022)
    try:
        for name in ("a.gif", "a.mp4"):
            path = save_video(str(tmp_path / name), np.zeros((4, 16, 16, 3), np.uint8))
            assert os.stat(path).st_mode & 0o777 == 0o644, name
        _write_json_atomic(str(tmp_path / "metrics.json"), {"a": 1})
        assert os.stat(tmp_path / "metrics.json").st_mode & 0o777 == 0o644
    finally:
        os.umask(previous)


def test_non_utf8_prompts_file_is_a_one_line_error(tmp_path):
    from vdm_jax.evaluation.loading import EvalInputError
    from vdm_jax.evaluation.sample_cli import load_prompts

    path = tmp_path / "prompts.txt"
    path.write_bytes(b"a red caf\xe9 moves left\n")
    with pytest.raises(EvalInputError, match=rf"cannot read --prompts_file {path}: not UTF-8"):
        load_prompts([], str(path))


def test_truncated_prompt_warns_with_its_token_count(tmp_path, capsys):
    from data_pipelines.tokenizers import ByteTokenizer
    from vdm_jax.evaluation.sample_cli import warn_truncated

    config = ts.smoke_config(tmp_path)
    limit = config.model.max_text_len
    long = "x" * (limit + 5)
    (warning,) = warn_truncated(config, ByteTokenizer(), ["a red 7", long])
    assert f"has {limit + 7} tokens" in warning and f"reads {limit}" in warning
    assert warning in capsys.readouterr().err


def test_config_and_workdir_path_mistakes_are_one_line_errors(tmp_path):
    from launch import cli

    (tmp_path / "dir.py").mkdir()
    for spec, message in ((f"{tmp_path}/missing.py:smoke", "no such config file"),
                          (f"{tmp_path}/dir.py", "is a directory, not a config file")):
        with pytest.raises(SystemExit, match=message):
            cli._check_config_path(["prog", f"--config={spec}"])
        with pytest.raises(SystemExit, match=message):
            cli._check_config_path(["prog", "--config", spec])


def test_training_refuses_a_file_as_workdir(tmp_path):
    import jax

    from vdm_jax.config import ConfigError
    from vdm_jax.training.loop import train_and_evaluate

    path = tmp_path / "workdir"
    path.write_text("not a directory")
    with pytest.raises(ConfigError, match="is not a directory"):
        train_and_evaluate(ts.smoke_config(tmp_path), str(path), devices=jax.devices()[:1])


def test_evaluation_checks_it_can_write_before_computing(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "eval").write_text("")  # its outputs' directory cannot be created
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ts.REPO)}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "launch.evaluate", f"--config={ts.SMOKE}",
                           f"--workdir={workdir}"], cwd=ts.REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    expected = f"error: cannot write the evaluation's outputs to {workdir / 'eval'}: [Errno "
    assert last.startswith(expected), last
    assert time.time() - start < 60
