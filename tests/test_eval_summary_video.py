"""Summary across steps (CSV, markdown, PNG) and video writing (gif, mp4, grid with captions)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from data_pipelines import video_io
from vdm_jax.evaluation import summary


def _write_step(workdir, step, metrics):
    d = workdir / "eval" / f"step_{step}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))


def test_summary_from_eval_dirs(tmp_path):
    for step, loss in ((200, 0.5), (100, 0.9), (300, 0.4)):
        _write_step(tmp_path, step, {"eval_loss": loss, "fvd": 1000 / step, "align_color_acc": step / 400,
                                     "align_color_chance": 0.1875, "fvd_protocol": {"num_clips": 64}})
    (tmp_path / "eval" / "step_400").mkdir()
    (tmp_path / "eval" / "step_400" / "metrics.json").write_text("{broken")
    rows, bad = summary.load_step_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [100, 200, 300] and len(bad) == 1 and "step_400" in bad[0]
    paths = summary.write_summary(rows, str(tmp_path / "out"))
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == [100, 200, 300]
    assert float(table[0]["eval_loss"]) == 0.9 and table[2]["fvd_protocol.num_clips"] == "64"
    md = open(paths["md"]).read().splitlines()
    assert md[0].startswith("| step | eval_loss") and len(md) == 5
    img = Image.open(paths["png"])
    assert img.size[0] > 300 and img.size[1] > 150


def test_summary_requires_step():
    with pytest.raises(ValueError, match="step"):
        summary.write_summary([{"fvd": 1.0}], "/tmp/unused")


def _clip(t=4, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_make_grid_tiles_upscales_and_captions():
    clips = [_clip(seed=i) for i in range(3)] + [_clip(t=2, seed=9)]
    grid = video_io.make_grid(clips, ncols=2, pad=2)
    assert grid.dtype == np.uint8 and grid.shape == (4, 2 * (128 + 2) + 2, 2 * (128 + 2) + 2, 3)
    np.testing.assert_array_equal(grid[0, 2:6, 2:6], np.broadcast_to(clips[0][0, 0, 0], (4, 4, 3)))
    np.testing.assert_array_equal(grid[3, 132 + 2:132 + 6, 132:136], grid[1, 134:138, 132:136])  # held
    captioned = video_io.make_grid(clips, captions=["a big red 7 moves left fast"] * 4, ncols=2)
    assert captioned.shape[1] > grid.shape[1] and captioned.shape[2] == grid.shape[2]
    strip = captioned[0, 2:12, 2:130]
    assert strip.max() > 200  # white caption text drawn above the clip
    floats = video_io.make_grid(np.zeros((2, 3, 16, 16, 3), np.float32) - 1.0)
    assert floats.shape[0] == 3 and floats[0, 2, 2].tolist() == [0, 0, 0]


def test_save_gif_and_mp4_roundtrip(tmp_path):
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    for t in range(5):  # a moving square: Pillow merges identical consecutive frames
        frames[t, 8:24, 8 + 4 * t:24 + 4 * t] = (255, 0, 0)
    gif = video_io.save_video(str(tmp_path / "a" / "s.gif"), frames, fps=5)
    img = Image.open(gif)
    assert img.n_frames == 5 and img.size == (48, 32)
    assert img.convert("RGB").getpixel((16, 16)) == (255, 0, 0)
    import av

    grid = video_io.make_grid([frames, frames[:, :, ::-1]], pad=3)  # odd size: padded to even
    mp4 = video_io.save_video(str(tmp_path / "s.mp4"), grid, fps=8)
    with av.open(mp4) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    even = lambda n: n + n % 2
    assert len(decoded) == 5 and decoded[0].shape[:2] == (even(grid.shape[1]), even(grid.shape[2]))
    assert np.abs(decoded[2][:grid.shape[1], :grid.shape[2]].astype(int) - grid[2]).mean() < 10
    assert not list(tmp_path.glob("tmp*"))  # temporary files were renamed or removed


def test_save_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="must end in"):
        video_io.save_video(str(tmp_path / "x.avi"), _clip())
    with pytest.raises(ValueError, match="frames must be"):
        video_io.save_video(str(tmp_path / "x.gif"), np.zeros((2, 3), np.uint8))
