"""A tfds catalog dataset (registered builder, prepared as array_record) read via tfds.data_source."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import pipeline, sources
from vdm_jax.config import DataConfig

LABELS = ["walking", "jumping", "waving"]


class VdmTestCatalog(tfds.core.GeneratorBasedBuilder):
    """Stands in for a catalog video dataset such as ucf101 (video + ClassLabel)."""

    VERSION = tfds.core.Version("1.0.0")

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(shape=(6, 20, 24, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=LABELS),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(12), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"frames": np.full((6, 20, 24, 3), 10 * i, np.uint8), "label": i % 3}


@pytest.fixture(scope="module")
def catalog_cfg(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("catalog"))
    VdmTestCatalog(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return DataConfig(dataset="vdm_test_catalog", data_dir=data_dir, num_frames=4, resolution=16,
                      video_key="frames", caption_key="label")


def test_catalog_dataset_streams_through_tfds_data_source(catalog_cfg):
    source = sources.open_split(catalog_cfg, "train")
    assert isinstance(source, sources.CatalogSource) and len(source) == 12
    rec = source[0]
    assert rec["video"].shape == (6, 20, 24, 3) and rec["caption"] in LABELS
    batch = next(pipeline.make_train_iterator(catalog_cfg, global_batch_size=4, max_text_len=16))
    assert batch["video"].shape == (4, 4, 16, 16, 3)  # window of 4 frames, centre-cropped + resized
    from data_pipelines.tokenizers import ByteTokenizer

    assert {ByteTokenizer().decode(t) for t in batch["tokens"]} <= set(LABELS)
    records = pipeline.eval_records(catalog_cfg, 2)
    assert records[0]["video"].shape == (4, 16, 16, 3)


def test_catalog_feature_keys_are_checked(catalog_cfg):
    bad = DataConfig(**{**catalog_cfg.__dict__, "video_key": "video"})
    with pytest.raises(KeyError, match="video_key"):
        sources.open_split(bad, "train")
