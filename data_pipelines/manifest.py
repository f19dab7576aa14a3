"""The completion manifest of a prepared dataset: ``vdm_complete.json``, written last.

A prepared directory counts as complete only when its manifest is there and every file it lists
has the listed size; a half-written directory (an interrupted build, a copy cut short, a truncated
shard) has no manifest or a file of the wrong size and is rebuilt. ``video_folder`` manifests also
hold a hash of the sources (the captions file and every file it names: path, size, mtime), so a
directory prepared from files that have changed since is stale and rebuilt too.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable

MANIFEST = "vdm_complete.json"
_SKIP_PREFIXES = (".tmp", ".lock")


def _listed(path: str) -> dict[str, int]:
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if name == MANIFEST or name.startswith(_SKIP_PREFIXES) or name.endswith(".lock"):
                continue
            files[rel] = os.path.getsize(full)
    return dict(sorted(files.items()))


def write(path: str, **extra) -> dict:
    """List every file of ``path`` with its size and write the manifest (atomically, last)."""
    manifest = {"files": _listed(path), **extra}
    tmp = os.path.join(path, f".tmp-{MANIFEST}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(path, MANIFEST))
    return manifest


def read(path: str) -> dict | None:
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def problem(path: str) -> str | None:
    """Why ``path`` is not a complete prepared dataset (one phrase naming the file), or None."""
    manifest = read(path)
    if manifest is None:
        return f"no completion manifest {os.path.join(path, MANIFEST)} (an interrupted or older preparation)"
    for rel, size in manifest["files"].items():
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            return f"{full} is missing"
        if os.path.getsize(full) != size:
            return (f"{full} has {os.path.getsize(full)} bytes, the manifest says {size} "
                    "(truncated or changed)")
    return None


def source_hash(paths: Iterable[str], options: dict) -> str:
    """Hash of the sources' names, sizes and mtimes (and the options they were prepared with)."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
    for p in sorted(set(paths)):
        try:
            st = os.stat(p)
            h.update(json.dumps([p, st.st_size, st.st_mtime_ns]).encode())
        except OSError:
            h.update(json.dumps([p, None]).encode())
    return h.hexdigest()
