"""``video_folder``: the user's own videos (and images) with captions -> ArrayRecord shards.

Input: ``source_dir`` with video files (mp4, webm, avi, gif, ...) and/or images, plus a captions
file (JSONL lines ``{"path": ..., "caption": ...}`` or CSV with a ``path,caption`` header);
paths are relative to ``source_dir`` (or absolute). Only captioned files are used.

Output: a tfds dataset directory ``{data_dir}/video_folder/{name}/1.0.0`` with splits ``train``
and ``test`` (whole videos, chosen deterministically) of fixed-length clips (resampled to
``fps``, resized and centre-cropped, several per video every ``stride`` frames) and ``image``
(captioned images as T=1 records), in the same record schema as ``moving_digits``.

Robustness: shards are written in parallel, each into a temp name renamed when complete, with
a per-shard report; rerunning after an interruption keeps finished shards (of the same sources).
The directory is complete only once its manifest (``vdm_complete.json``, with the sources' hash)
is written, last; a stale or half-written one is prepared again, and an empty result is an error.
Unreadable, corrupt and too-short videos are skipped and counted in ``prepare_report.json``; a
captions file that names missing files raises (``on_missing='error'``) or skips and counts them (``'skip'``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tqdm import tqdm

from data_pipelines import manifest, records, video_io

NAME = "video_folder"
VERSION = "1.0.0"
_REPORTS = ".shard_reports"
_SOURCE_HASH = ".source_hash"  # the sources a (possibly unfinished) preparation is made from


@dataclasses.dataclass(frozen=True)
class FolderOptions:
    source_dir: str
    captions_file: str = ""  # '' -> source_dir/captions.jsonl, else source_dir/captions.csv
    num_frames: int = 8
    resolution: int = 32
    fps: float = 8.0
    stride: int = 0  # frames between clip starts; 0 -> num_frames (no overlap)
    max_clips_per_video: int = 0  # 0 -> all
    test_fraction: float = 0.1  # share of videos (whole videos) in the test split
    on_missing: str = "error"  # 'error' | 'skip': captions naming files that do not exist
    videos_per_shard: int = 64
    name: str = ""  # '' -> derived from source_dir and the options

    def validate(self) -> None:
        if not os.path.isdir(self.source_dir):
            raise FileNotFoundError(f"source_dir {self.source_dir!r} is not a directory")
        if self.num_frames < 1 or self.resolution < 8 or self.stride < 0 or not self.fps > 0:
            raise ValueError(f"bad clip options: num_frames={self.num_frames} (>=1), resolution="
                             f"{self.resolution} (>=8), stride={self.stride} (>=0), fps={self.fps} (>0)")
        if self.on_missing not in ("error", "skip"):
            raise ValueError(f"on_missing must be 'error' or 'skip', got {self.on_missing!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")

    @property
    def clip_stride(self) -> int:
        return self.stride or self.num_frames


def options_from_config(data_cfg) -> FolderOptions:
    return FolderOptions(source_dir=os.path.abspath(os.path.expanduser(data_cfg.source_dir or ".")),
                         captions_file=data_cfg.captions_file, num_frames=data_cfg.num_frames,
                         resolution=data_cfg.resolution, fps=data_cfg.fps, stride=data_cfg.clip_stride)


def config_name(opts: FolderOptions) -> str:
    """Identity of a prepared folder: source, captions file and every clip option."""
    if opts.name:
        return opts.name
    src = os.path.abspath(opts.source_dir)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(src.rstrip(os.sep)) or "root").strip("_")[:40]
    ident = json.dumps([src, opts.captions_file, opts.max_clips_per_video, opts.test_fraction])
    digest = hashlib.sha1(ident.encode()).hexdigest()[:8]
    return f"{slug}_{digest}_f{opts.num_frames}_r{opts.resolution}_fps{opts.fps:g}_st{opts.clip_stride}"


def dataset_dir(data_dir: str, opts: FolderOptions) -> str:
    return os.path.join(os.fspath(data_dir), NAME, config_name(opts), VERSION)


# --------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------


def captions_path(opts: FolderOptions) -> str:
    if opts.captions_file:
        path = opts.captions_file if os.path.isabs(opts.captions_file) else \
            os.path.join(opts.source_dir, opts.captions_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"captions file {path!r} not found")
        return path
    for name in ("captions.jsonl", "captions.csv"):
        if os.path.isfile(os.path.join(opts.source_dir, name)):
            return os.path.join(opts.source_dir, name)
    raise FileNotFoundError(f"no captions file: pass --captions or add captions.jsonl/captions.csv to "
                            f"{opts.source_dir}")


def read_captions(path: str) -> list[tuple[str, str]]:
    """[(path, caption)] from a JSONL or CSV (header ``path,caption``) file."""
    entries = []
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"path", "caption"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: CSV needs a header with 'path' and 'caption' columns, "
                                 f"got {reader.fieldnames}")
            entries = [(row["path"], row["caption"]) for row in reader]
    else:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    entries.append((str(obj["path"]), str(obj["caption"])))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{n}: expected a JSON object with 'path' and 'caption' "
                                     f"({type(e).__name__}: {e})") from None
    return entries


def list_items(opts: FolderOptions) -> tuple[dict[str, list[tuple[str, str]]], list[str], list[str]]:
    """Resolve the captions file: ({split: [(abs_path, caption)]}, missing paths, unknown-type paths)."""
    entries = read_captions(captions_path(opts))
    videos, images, missing, unknown = [], [], [], []
    for rel, caption in entries:
        path = rel if os.path.isabs(rel) else os.path.join(opts.source_dir, rel)
        ext = os.path.splitext(path)[1].lower()
        if not os.path.isfile(path):
            missing.append(rel)
        elif ext in video_io.VIDEO_EXTENSIONS:
            videos.append((path, caption))
        elif ext in video_io.IMAGE_EXTENSIONS:
            images.append((path, caption))
        else:
            unknown.append(rel)
    if missing and opts.on_missing == "error":
        raise FileNotFoundError(f"{captions_path(opts)} names {len(missing)} missing file(s), e.g. "
                                f"{missing[:3]}; pass --on_missing=skip to skip them")
    videos.sort()
    n_test = 0
    if opts.test_fraction > 0 and len(videos) >= 2:
        n_test = max(1, round(opts.test_fraction * len(videos)))
    test_idx = set(np.linspace(0, len(videos) - 1, n_test).round().astype(int).tolist()) if n_test else set()
    splits = {"train": [v for i, v in enumerate(videos) if i not in test_idx],
              "test": [v for i, v in enumerate(videos) if i in test_idx],
              records.IMAGE_SPLIT: sorted(images)}
    return {k: v for k, v in splits.items() if v}, missing, unknown


# --------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------


def _shard_name(split: str, index: int, count: int) -> str:
    return f"{NAME}-{split}.array_record-{index:05d}-of-{count:05d}"


def _shard_tasks(opts: FolderOptions, out_dir: str, splits: dict[str, list]) -> list[dict[str, Any]]:
    tasks = []
    for split, items in splits.items():
        count = max(1, -(-len(items) // opts.videos_per_shard))
        for i in range(count):
            tasks.append({"split": split, "index": i, "count": count, "items": items[i::count],
                          "out_dir": out_dir, "opts": opts})
    return tasks


def _report_path(task: dict) -> str:
    name = _shard_name(task["split"], task["index"], task["count"])
    return os.path.join(task["out_dir"], _REPORTS, name + ".json")


def write_shard(task: dict) -> dict:
    """Decode one shard's files and write them; never raises on a bad file (it is counted)."""
    opts: FolderOptions = task["opts"]
    final = os.path.join(task["out_dir"], _shard_name(task["split"], task["index"], task["count"]))
    if os.path.exists(final) and os.path.exists(_report_path(task)):
        with open(_report_path(task)) as f:
            return json.load(f)  # finished by an earlier run
    features = records.video_features(opts.resolution)
    tmp = os.path.join(task["out_dir"], f".tmp-{os.getpid()}-{os.path.basename(final)}")
    report = {"split": task["split"], "shard": os.path.basename(final), "num_records": 0, "files_ok": 0,
              "unreadable": 0, "too_short": 0, "failures": []}
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    try:
        for path, caption in task["items"]:
            try:
                clips = _decode_item(path, opts, task["split"])
            except Exception as e:  # noqa: BLE001 - any decoder error means: skip and count
                report["unreadable"] += 1
                report["failures"].append({"path": path, "reason": "unreadable",
                                           "error": f"{type(e).__name__}: {e}"})
                continue
            if not clips:
                report["too_short"] += 1
                report["failures"].append({"path": path, "reason": "too_short"})
                continue
            for clip in clips:
                example = {records.VIDEO_KEY: clip, records.CAPTION_KEY: caption}
                writer.write(features.serialize_example(example))
            report["files_ok"] += 1
            report["num_records"] += len(clips)
    finally:
        writer.close()
    _atomic_json(_report_path(task), report)
    os.replace(tmp, final)
    return report


def _decode_item(path: str, opts: FolderOptions, split: str) -> list[np.ndarray]:
    if split == records.IMAGE_SPLIT:
        return [video_io.decode_image(path, opts.resolution)[None]]
    frames = video_io.decode_video(path, opts.fps, opts.resolution)
    return list(video_io.cut_clips(frames, opts.num_frames, opts.clip_stride, opts.max_clips_per_video))


def _atomic_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _run_tasks(tasks: list[dict], num_workers: int, progress: bool) -> list[dict]:
    bar = tqdm(total=sum(len(t["items"]) for t in tasks), unit="file", desc="video_folder",
               disable=not progress)
    reports = []
    try:
        if num_workers > 0 and len(tasks) > 1:
            with multiprocessing.get_context("spawn").Pool(min(num_workers, len(tasks))) as pool:
                for report in pool.imap_unordered(write_shard, tasks):
                    reports.append(report)
                    bar.update(report["files_ok"] + report["unreadable"] + report["too_short"])
        else:
            for task in tasks:
                reports.append(write_shard(task))
                bar.update(len(task["items"]))
    finally:
        bar.close()
    return reports


def prepare(opts: FolderOptions, data_dir: str, *, num_workers: int = 0, progress: bool = True) -> str:
    """Prepare (or finish preparing) the dataset; returns its directory. Idempotent.

    A complete directory (its manifest, written last, lists every file with its size) prepared from
    the same sources (names, sizes and mtimes of the captions file and every file it names) is
    reused; a stale or broken one is prepared again. A result without a single clip or image is
    an error.
    """
    out_dir = dataset_dir(data_dir, opts)
    if not os.path.isdir(opts.source_dir) and manifest.problem(out_dir) is None:
        print(f"warning: source_dir {opts.source_dir} is gone: using the dataset prepared from it at "
              f"{out_dir}", file=sys.stderr)
        return out_dir
    opts.validate()
    splits, missing, unknown = list_items(opts)
    fingerprint = source_fingerprint(opts, splits)
    why = manifest.problem(out_dir)
    if why is None:
        if manifest.read(out_dir).get("source_hash") == fingerprint:
            return out_dir
        why = "its source files changed since it was prepared"
    if not splits:
        raise ValueError(f"{captions_path(opts)}: no existing video or image files to prepare")
    recorded = _read_text(os.path.join(out_dir, _SOURCE_HASH))
    if os.path.isdir(out_dir) and (os.path.exists(os.path.join(out_dir, "dataset_info.json")) or
                                   (recorded is not None and recorded != fingerprint)):
        print(f"video_folder at {out_dir}: {why}: preparing it again", file=sys.stderr)
        shutil.rmtree(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, _SOURCE_HASH), "w") as f:
        f.write(fingerprint)
    for stale in os.listdir(out_dir):  # temp shards of an interrupted run (one preparer at a time)
        if stale.startswith(".tmp-"):
            os.remove(os.path.join(out_dir, stale))
    tasks = _shard_tasks(opts, out_dir, splits)
    reports = _run_tasks(tasks, num_workers, progress)
    split_infos = []
    for split in splits:
        mine = sorted((r for r in reports if r["split"] == split), key=lambda r: r["shard"])
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[r["num_records"] for r in mine],
                                               num_bytes=0))
    report = _summary(opts, splits, reports, missing, unknown)
    _atomic_json(os.path.join(out_dir, records.REPORT_FILENAME), report)
    if not sum(report["records"].values()):
        images = len(splits.get(records.IMAGE_SPLIT, []))
        raise ValueError(
            f"video_folder: no clip or image could be prepared from the {report['videos_total']} video(s) "
            f"and {images} image(s) captioned in {captions_path(opts)} (unreadable {report['unreadable']}, "
            f"too short {report['too_short']}, missing {report['missing']}, unknown type "
            f"{report['unknown_type']}); details in {os.path.join(out_dir, records.REPORT_FILENAME)}")
    tfds.folder_dataset.write_metadata(data_dir=out_dir, features=records.video_features(opts.resolution),
                                       split_infos=split_infos, check_data=False,
                                       description=f"video_folder from {opts.source_dir}")
    manifest.write(out_dir, dataset=NAME, source_hash=fingerprint)
    return out_dir


def source_fingerprint(opts: FolderOptions, splits: dict[str, list]) -> str:
    """Hash of the captions file and every file it names that is prepared (path, size, mtime)."""
    paths = [captions_path(opts)] + [p for items in splits.values() for p, _ in items]
    options = {k: v for k, v in dataclasses.asdict(opts).items() if k != "name"}
    return manifest.source_hash(paths, options)


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _summary(opts, splits, reports, missing, unknown) -> dict:
    videos = [r for r in reports if r["split"] != records.IMAGE_SPLIT]
    images = [r for r in reports if r["split"] == records.IMAGE_SPLIT]
    return {
        "source_dir": opts.source_dir, "options": dataclasses.asdict(opts),
        "videos_total": sum(len(v) for k, v in splits.items() if k != records.IMAGE_SPLIT),
        "videos_ok": sum(r["files_ok"] for r in videos),
        "unreadable": sum(r["unreadable"] for r in reports),
        "too_short": sum(r["too_short"] for r in videos),
        "missing": len(missing), "missing_paths": missing[:100],
        "unknown_type": len(unknown), "unknown_type_paths": unknown[:100],
        "images_ok": sum(r["files_ok"] for r in images),
        "records": {s: sum(r["num_records"] for r in reports if r["split"] == s) for s in splits},
        "failures": [f for r in reports for f in r["failures"]][:1000],
    }


def load_report(dataset_path: str) -> dict:
    with open(os.path.join(dataset_path, records.REPORT_FILENAME)) as f:
        return json.load(f)
