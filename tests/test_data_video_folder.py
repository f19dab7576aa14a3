"""video_folder: real video files written here (mp4, gif, webm, a corrupt and a too-short one)."""

import json
import os

import numpy as np
import pytest

from data_pipelines import records, sources, video_folder, video_io
from data_pipelines.video_folder import FolderOptions


def _frames(n, h, w, seed):
    """A bright square that moves right one step per frame on a dark, coloured background."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 60, size=3)
    out = np.zeros((n, h, w, 3), np.uint8) + bg.astype(np.uint8)
    s = min(h, w) // 3
    for t in range(n):
        x = (t * 3) % (w - s)
        out[t, h // 2 - s // 2: h // 2 + s // 2, x:x + s] = (250, 250, 250)
    return out


def _write_video(path, frames, fps, codec):
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    src = tmp_path_factory.mktemp("videos")
    os.makedirs(src / "sub")
    _write_video(str(src / "a.mp4"), _frames(24, 48, 64, 0), 24, "mpeg4")  # 1 s at 24 fps
    _write_video(str(src / "sub" / "b.gif"), _frames(10, 40, 40, 1), 10, "gif")  # 1 s at 10 fps
    _write_video(str(src / "c.webm"), _frames(16, 36, 52, 2), 8, "libvpx")  # 2 s at 8 fps
    _write_video(str(src / "short.mp4"), _frames(3, 32, 32, 3), 8, "mpeg4")  # 3 frames: too short
    (src / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    from PIL import Image

    Image.fromarray(_frames(1, 30, 50, 4)[0]).save(src / "still.png")
    entries = [("a.mp4", "a square moves right"), ("sub/b.gif", "gif square"), ("c.webm", "webm clip"),
               ("short.mp4", "too short"), ("corrupt.mp4", "broken"), ("still.png", "a still image")]
    with open(src / "captions.jsonl", "w") as f:
        for path, caption in entries:
            f.write(json.dumps({"path": path, "caption": caption}) + "\n")
    return src


def _opts(folder, **kw):
    base = dict(source_dir=str(folder), num_frames=4, resolution=16, fps=8.0, stride=2, test_fraction=0.0,
                videos_per_shard=2)
    return FolderOptions(**{**base, **kw})


def test_decode_resamples_fps_and_crops():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "v.mp4")
        _write_video(path, _frames(24, 48, 64, 0), 24, "mpeg4")
        frames = list(video_io.decode_video(path, fps=8.0, resolution=16))
    assert len(frames) == 8 and frames[0].shape == (16, 16, 3) and frames[0].dtype == np.uint8
    clips = list(video_io.cut_clips(iter(frames), num_frames=4, stride=2))
    assert len(clips) == 3 and all(c.shape == (4, 16, 16, 3) for c in clips)
    np.testing.assert_array_equal(clips[1][0], frames[2])


def test_prepare_counts_clips_failures_and_captions(folder, tmp_path):
    path = video_folder.prepare(_opts(folder), str(tmp_path), num_workers=0, progress=False)
    report = video_folder.load_report(path)
    # a.mp4: 1 s -> 8 frames at 8 fps -> clips at 0,2,4 = 3; b.gif: 1 s -> 8 frames -> 3;
    # c.webm: 2 s at 8 fps -> 16 frames -> clips at 0,2,..,12 = 7.
    assert report["videos_total"] == 5 and report["videos_ok"] == 3
    assert report["unreadable"] == 1 and report["too_short"] == 1 and report["missing"] == 0
    assert report["images_ok"] == 1
    assert report["records"] == {"train": 13, "image": 1}
    reasons = {os.path.basename(f["path"]): f["reason"] for f in report["failures"]}
    assert reasons == {"corrupt.mp4": "unreadable", "short.mp4": "too_short"}
    source = sources.open_split_from_dir(path, "train")
    recs = [source[i] for i in range(len(source))]
    counts = {}
    for r in recs:
        assert r["video"].shape == (4, 16, 16, 3) and r["video"].dtype == np.uint8
        counts[records.caption_text(r["caption"])] = counts.get(records.caption_text(r["caption"]), 0) + 1
    assert counts == {"a square moves right": 3, "gif square": 3, "webm clip": 7}
    bright = [r["video"][0].max() for r in recs]
    assert min(bright) > 200  # the white square survived decoding and resizing
    image = sources.open_split_from_dir(path, "image")[0]
    assert image["video"].shape == (1, 16, 16, 3) and image["caption"] == b"a still image"
    # Idempotent: preparing again reuses the finished dataset.
    assert video_folder.prepare(_opts(folder), str(tmp_path), progress=False) == path


def test_interrupted_prepare_keeps_finished_shards(folder, tmp_path):
    opts = _opts(folder)
    splits, _, _ = video_folder.list_items(opts)
    out = video_folder.dataset_dir(str(tmp_path), opts)
    os.makedirs(out)
    tasks = video_folder._shard_tasks(opts, out, splits)
    done = video_folder.write_shard(tasks[0])  # "interrupted" after the first shard
    first = os.path.join(out, done["shard"])
    mtime = os.path.getmtime(first)
    open(os.path.join(out, ".tmp-999-" + done["shard"]), "wb").write(b"partial")
    path = video_folder.prepare(opts, str(tmp_path), num_workers=2, progress=False)
    assert os.path.getmtime(first) == mtime  # not rewritten
    assert not any(f.startswith(".tmp-") for f in os.listdir(path))
    assert video_folder.load_report(path)["records"] == {"train": 13, "image": 1}


def test_missing_files_error_or_skip(folder, tmp_path):
    with open(folder / "captions_missing.csv", "w") as f:
        f.write("path,caption\na.mp4,a square\nnot_there.mp4,ghost\n")
    opts = _opts(folder, captions_file="captions_missing.csv")
    with pytest.raises(FileNotFoundError, match="not_there.mp4"):
        video_folder.prepare(opts, str(tmp_path), progress=False)
    path = video_folder.prepare(_opts(folder, captions_file="captions_missing.csv", on_missing="skip"),
                                str(tmp_path), progress=False)
    report = video_folder.load_report(path)
    assert report["missing"] == 1 and report["missing_paths"] == ["not_there.mp4"]
    assert report["records"] == {"train": 3}


def test_test_split_holds_whole_videos_and_pipeline_reads_it(folder, tmp_path):
    from data_pipelines import pipeline
    from vdm_jax.config import DataConfig

    cfg = DataConfig(dataset="video_folder", source_dir=str(folder), data_dir=str(tmp_path), num_frames=4,
                     resolution=16, fps=8.0, clip_stride=2)
    path = sources.ensure_prepared(cfg)
    report = video_folder.load_report(path)
    assert set(report["records"]) == {"train", "test", "image"}
    batch = next(pipeline.make_train_iterator(cfg, global_batch_size=2))
    assert batch["video"].shape == (2, 4, 16, 16, 3)
    assert batch["video"].min() >= -1 and batch["video"].max() <= 1


def test_bad_captions_file_fails_clearly(folder, tmp_path):
    (folder / "bad.jsonl").write_text('{"path": "a.mp4"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1"):
        video_folder.prepare(_opts(folder, captions_file="bad.jsonl"), str(tmp_path), progress=False)
