"""A global, seeded, per-epoch shuffle for grain MapDatasets backed by a cached permutation.

grain's ``MapDataset.shuffle`` computes each index with a Feistel network whose cost depends on
the dataset size: 2-3 us per element for some sizes but 0.1-2 ms for others (e.g. 16, 64 or 2000
elements) — a whole batch of latency on small datasets. Here each epoch's permutation is one
``numpy`` call, cached; datasets above ``MAX_PERMUTATION`` elements use grain's shuffle.
Like grain's, it is a pure function of (seed, index): iterator state stays a plain index.
"""

from __future__ import annotations

import grain
import numpy as np

MAX_PERMUTATION = 1 << 24  # 16M elements -> 128 MB of int64 per cached epoch


class EpochShuffleMapDataset(grain.MapDataset):
    """Element ``e*n + i`` is ``parent[perm_e[i]]`` with ``perm_e`` seeded by (seed, e)."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, seed: int):
        super().__init__(parent)
        self._seed = int(seed)
        self._cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._parent)

    def __str__(self) -> str:
        return f"EpochShuffleMapDataset(seed={self._seed})"

    def permutation(self, epoch: int) -> np.ndarray:
        cache = self._cache
        if cache is None or cache[0] != epoch:
            cache = (epoch, np.random.default_rng([self._seed, epoch]).permutation(len(self._parent)))
            self._cache = cache
        return cache[1]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        n = len(self._parent)
        epoch, i = divmod(int(index), n)
        return self._parent[int(self.permutation(epoch)[i]) + epoch * n]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None  # recomputed in worker processes
        return state


def shuffle(ds: grain.MapDataset, seed: int) -> grain.MapDataset:
    """Seeded global shuffle, different in each epoch when followed by ``repeat``."""
    if len(ds) <= MAX_PERMUTATION:
        return EpochShuffleMapDataset(ds, seed)
    return ds.shuffle(seed=seed)
