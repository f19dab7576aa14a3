"""Build the device mesh from :class:`vdm_jax.config.MeshConfig`.

The mesh always has the four named axes ``(data, fsdp, tensor, context)`` (size-1 axes cost
nothing), with ``Auto`` axis types: shardings come from logical-axis rules and
``with_sharding_constraint``, and XLA's partitioner inserts the collectives.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from vdm_jax.config import MESH_AXES, ConfigError, MeshConfig


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    sizes = cfg.axis_sizes(len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if cfg.dcn_data > 1 or cfg.dcn_fsdp > 1:
        dcn = {a: 1 for a in MESH_AXES}
        dcn["data"], dcn["fsdp"] = cfg.dcn_data, cfg.dcn_fsdp
        for a in ("data", "fsdp"):
            if sizes[a] % dcn[a]:
                raise ConfigError(f"mesh.dcn_{a}", f"must divide mesh.{a}={sizes[a]}")
        ici = tuple(sizes[a] // dcn[a] for a in MESH_AXES)
        dev_array = mesh_utils.create_hybrid_device_mesh(
            ici, tuple(dcn[a] for a in MESH_AXES), devices=devices, allow_split_physical_axes=True)
        return Mesh(dev_array, MESH_AXES, axis_types=axis_types)
    if devices == list(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


def describe(mesh: Mesh) -> str:
    return " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
