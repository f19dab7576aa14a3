"""Logical axis names -> mesh axes.

Parameters and activations are annotated with *logical* axis names (``"embed"``, ``"mlp"``,
``"act_batch"`` ...).  One ordered rule list (``MeshConfig.rules``, see
``vdm_jax/config.py:DEFAULT_RULES``) maps them to mesh axes:

* the first rule whose name matches and whose mesh axes are still unused in this spec wins
  (a mesh axis appears at most once per ``PartitionSpec``);
* a logical name with no usable rule (or ``None``) is replicated;
* when the array shape is known, a mesh axis that does not divide the dimension is dropped
  (that dimension is then sharded over the remaining axes, or replicated).

Parameters carry their logical names in the standard flax metadata field ``out_sharding``
(``nnx.Param(value, out_sharding=("embed", "mlp"))``, what ``nnx.with_partitioning`` writes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, Any]]
LogicalNames = Sequence[str | None]


def _rule_axes(target: Any) -> tuple[str, ...]:
    if target is None:
        return ()
    if isinstance(target, str):
        return (target,)
    return tuple(a for a in target if a is not None)


def _resolve_dim(name: str | None, rules: Rules, used: set[str], dim: int | None,
                 axis_sizes: Mapping[str, int] | None) -> tuple[str, ...]:
    if name is None:
        return ()
    for rule_name, target in rules:
        if rule_name != name:
            continue
        axes = _rule_axes(target)
        if axis_sizes is not None:
            axes = tuple(a for a in axes if a in axis_sizes)
        if any(a in used for a in axes):
            continue  # mesh axis already used by an earlier dim: try the next rule
        if dim is not None and axis_sizes is not None:
            kept, size = [], 1
            for a in axes:  # drop axes that would not divide the dimension evenly
                if dim % (size * axis_sizes[a]) == 0:
                    kept.append(a)
                    size *= axis_sizes[a]
            axes = tuple(kept)
        return axes
    return ()


def logical_to_spec(names: LogicalNames, rules: Rules, *, shape: Sequence[int] | None = None,
                    axis_sizes: Mapping[str, int] | None = None) -> PartitionSpec:
    """Map logical names (one per dim) to a ``PartitionSpec`` using ``rules`` (first match wins).

    With ``shape`` and ``axis_sizes`` (mesh axis -> size), mesh axes that are not in the mesh or
    do not divide their dimension are dropped.
    """
    if shape is not None and len(shape) != len(names):
        raise ValueError(f"logical names {tuple(names)} do not match array rank {len(shape)}")
    used: set[str] = set()
    out = []
    for i, name in enumerate(names):
        dim = None if shape is None else int(shape[i])
        axes = _resolve_dim(name, rules, used, dim, axis_sizes)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def active_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh set by ``jax.set_mesh`` (or ``None`` when no mesh is active)."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def constrain(x: jax.Array, logical_names: LogicalNames, rules: Rules) -> jax.Array:
    """``with_sharding_constraint`` by logical names when a mesh is active; identity otherwise."""
    mesh = active_mesh()
    if mesh is None or not rules:
        return x
    spec = logical_to_spec(logical_names, rules, shape=x.shape, axis_sizes=dict(mesh.shape))
    return jax.lax.with_sharding_constraint(x, spec)


def variable_logical_names(v: nnx.Variable) -> tuple[str | None, ...] | None:
    """The logical names a variable was annotated with (``out_sharding``), or ``None``."""
    names = v.get_metadata().get("out_sharding")
    return tuple(names) if names else None


def state_specs(state: Any, rules: Rules, mesh: jax.sharding.Mesh | None = None) -> Any:
    """PartitionSpecs (same tree structure as ``state``) from each variable's logical names."""
    sizes = dict(mesh.shape) if mesh is not None else None

    def spec(v: Any) -> Any:
        if isinstance(v, nnx.Variable):
            names = variable_logical_names(v)
            value = v.get_value()
            if names is None:
                return v.replace(PartitionSpec())
            return v.replace(logical_to_spec(names, rules, shape=value.shape, axis_sizes=sizes))
        return PartitionSpec()

    return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(state: Any, mesh: jax.sharding.Mesh, rules: Rules) -> Any:
    """NamedShardings for an ``nnx.State`` (or any tree of Variables) under ``mesh``."""
    specs = state_specs(state, rules, mesh)
    return jax.tree.map(lambda p: NamedSharding(mesh, p), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))
