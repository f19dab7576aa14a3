"""Prepared datasets are complete only with their manifest (written last): a half-written or
truncated ``moving_digits`` directory is generated again, a ``video_folder`` prepared from files
that changed since is prepared again, an empty result is an error, and a shard that cannot be read
is named."""

import json
import os

import pytest
from test_data_video_folder import _frames, _write_video

from data_pipelines import manifest, sources, video_folder
from data_pipelines.video_folder import FolderOptions
from vdm_jax.config import DataConfig


def _digits(tmp_path):
    return DataConfig(dataset="moving_digits", data_dir=str(tmp_path), num_frames=4, resolution=16,
                      num_train_clips=12, num_test_clips=5, num_images=0, max_objects=1)


def _shards(path):
    return sorted(f for f in os.listdir(path) if ".array_record-" in f)


def test_half_written_or_truncated_moving_digits_is_generated_again(tmp_path):
    cfg = _digits(tmp_path)
    path = sources.ensure_prepared(cfg)
    assert manifest.problem(path) is None
    listed = manifest.read(path)["files"]
    assert "dataset_info.json" in listed and all(s in listed for s in _shards(path))
    n_train = len(sources.open_split(cfg, "train", ("video",)))

    shard = os.path.join(path, next(s for s in _shards(path) if "-train." in s))
    size = os.path.getsize(shard)
    with open(shard, "r+b") as f:  # a copy cut short
        f.truncate(size // 2)
    assert shard in manifest.problem(path) and "truncated" in manifest.problem(path)
    with pytest.raises(sources.DatasetReadError, match=os.path.basename(shard)):
        reader = sources.KeysSource(path, "train", ("video",))
        [reader[i] for i in range(len(reader))]
    sources.ensure_prepared(cfg)
    assert os.path.getsize(shard) == size and manifest.problem(path) is None

    os.remove(os.path.join(path, manifest.MANIFEST))  # interrupted before the manifest: half-written
    os.remove(os.path.join(path, "dataset_info.json"))
    sources.ensure_prepared(cfg)
    assert manifest.problem(path) is None
    assert len(sources.open_split(cfg, "train", ("video",))) == n_train


def _folder(tmp_path, good: bool):
    src = tmp_path / "videos"
    src.mkdir(exist_ok=True)
    for name in ("a.mp4", "b.mp4"):
        if good:
            _write_video(str(src / name), _frames(16, 32, 32, 0), 8, "mpeg4")
        else:
            (src / name).write_bytes(b"not a video")
    (src / "captions.jsonl").write_text("".join(json.dumps({"path": n, "caption": f"clip {n}"}) + "\n"
                                                for n in ("a.mp4", "b.mp4")))
    return FolderOptions(source_dir=str(src), num_frames=4, resolution=16, test_fraction=0.0)


def test_empty_video_folder_is_an_error_and_fixed_files_are_prepared_again(tmp_path):
    opts = _folder(tmp_path, good=False)
    with pytest.raises(ValueError, match=r"no clip or image could be prepared .*\(unreadable 2"):
        video_folder.prepare(opts, str(tmp_path / "data"), progress=False)
    out = video_folder.dataset_dir(str(tmp_path / "data"), opts)
    assert manifest.problem(out) is not None, "an empty dataset must not be marked complete"

    _folder(tmp_path, good=True)  # the files are fixed: the same command prepares them
    path = video_folder.prepare(opts, str(tmp_path / "data"), progress=False)
    assert path == out and manifest.problem(path) is None
    assert video_folder.load_report(path)["records"] == {"train": 8}  # 2 s at 8 fps: 4 clips each


def test_video_folder_prepared_from_changed_files_is_stale(tmp_path):
    opts = _folder(tmp_path, good=True)
    path = video_folder.prepare(opts, str(tmp_path / "data"), progress=False)
    before = manifest.read(path)["source_hash"]
    assert video_folder.prepare(opts, str(tmp_path / "data"), progress=False) == path
    assert manifest.read(path)["source_hash"] == before, "unchanged sources: reused"

    _write_video(str(tmp_path / "videos" / "b.mp4"), _frames(8, 32, 32, 1), 8, "mpeg4")  # shorter now
    video_folder.prepare(opts, str(tmp_path / "data"), progress=False)
    assert manifest.read(path)["source_hash"] != before
    assert video_folder.load_report(path)["records"] == {"train": 4 + 2}
