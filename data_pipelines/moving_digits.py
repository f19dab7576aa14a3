"""``moving_digits``: the embedded, generated text-video dataset as a tfds ArrayRecord builder.

Splits: ``train`` and ``test`` (clips with captions and attributes) and ``image`` (single
captioned frames, stored as T=1 videos, for joint image-video training). Everything is a pure
function of the :class:`MovingDigitsConfig`, whose name encodes all parameters, so datasets
prepared with different frames/resolution/sizes/seed live in different directories:
``{data_dir}/moving_digits/{config.name}/{VERSION}``.

Needs neither TensorFlow nor internet: features are ``Tensor``/``Text`` and the files are
written by tfds' ArrayRecord writer.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow_datasets as tfds

from data_pipelines import moving_digits_spec as spec
from data_pipelines import records

NAME = "moving_digits"
VERSION = "1.0.0"


@dataclasses.dataclass
class MovingDigitsConfig(tfds.core.BuilderConfig):
    num_frames: int = 8
    resolution: int = 32
    num_train: int = 4000
    num_test: int = 256
    num_images: int = 2000
    seed: int = 0
    max_objects: int = 2


def make_config(num_frames: int = 8, resolution: int = 32, num_train: int = 4000, num_test: int = 256,
                num_images: int = 2000, seed: int = 0, max_objects: int = 2) -> MovingDigitsConfig:
    """A config whose name identifies every parameter (so different configs never collide)."""
    for field, value in (("num_frames", num_frames), ("num_train", num_train), ("num_test", num_test)):
        if value < 1:
            raise ValueError(f"moving_digits {field} must be >= 1, got {value}")
    if resolution < 8:
        raise ValueError(f"moving_digits resolution must be >= 8, got {resolution}")
    if num_images < 0:
        raise ValueError(f"moving_digits num_images must be >= 0, got {num_images}")
    if not 1 <= max_objects <= spec.MAX_OBJECTS:
        raise ValueError(f"moving_digits max_objects must be in [1, {spec.MAX_OBJECTS}], got {max_objects}")
    name = (f"f{num_frames}_r{resolution}_tr{num_train}_te{num_test}_im{num_images}"
            f"_s{seed}_o{max_objects}")
    return MovingDigitsConfig(name=name, version=VERSION, num_frames=num_frames, resolution=resolution,
                              num_train=num_train, num_test=num_test, num_images=num_images, seed=seed,
                              max_objects=max_objects)


class MovingDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Procedural clips of coloured digits and shapes that move or bounce, with captions."""

    VERSION = tfds.core.Version(VERSION)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # No checksums/metadata files next to the code. (tfds' default lookup needs the
        # undeclared `importlib_resources` package for builders defined in a package.)
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=records.video_features(cfg.resolution, with_attributes=True),
            metadata=tfds.core.MetadataDict(num_frames=cfg.num_frames, resolution=cfg.resolution,
                                            seed=cfg.seed, max_objects=cfg.max_objects),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        cfg = self.builder_config
        # Different seeds per split: test clips never repeat train clips' streams.
        splits = {"train": self._generate_examples(cfg.num_train, cfg.seed * 3),
                  "test": self._generate_examples(cfg.num_test, cfg.seed * 3 + 1)}
        if cfg.num_images:
            splits[records.IMAGE_SPLIT] = self._generate_images(cfg.num_images, cfg.seed * 3 + 2)
        return splits

    def _generate_examples(self, n: int, seed: int):
        cfg = self.builder_config
        for i in range(n):
            yield i, spec.generate_example(i, seed, cfg.num_frames, cfg.resolution, cfg.max_objects)

    def _generate_images(self, n: int, seed: int):
        cfg = self.builder_config
        for i in range(n):
            ex = spec.generate_image_example(i, seed, cfg.num_frames, cfg.resolution, cfg.max_objects)
            ex[records.VIDEO_KEY] = ex.pop("image")[None]
            yield i, ex


def dataset_dir(data_dir: str | os.PathLike, config: MovingDigitsConfig) -> str:
    return os.path.join(os.fspath(data_dir), NAME, config.name, VERSION)


def build(data_dir: str | os.PathLike, config: MovingDigitsConfig) -> str:
    """Generate and write the dataset (tfds writes into a temp dir and renames it when done)."""
    builder = MovingDigits(config=config, data_dir=os.fspath(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
    return os.fspath(builder.data_path)
