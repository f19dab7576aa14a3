"""The checkpoints of a training workdir (``WORKDIR/checkpoints``): orbax, written by training and
read by the evaluation job and the sample CLI.

One ``ocp.CheckpointManager`` with named items:
  ``state``     params, EMA params, optimizer state, step, RNG (sharded arrays, async save);
  ``data``      the grain iterator state (grain's own orbax handler, one file per process);
  ``config``    the resolved config (JSON);
  ``tokenizer`` what is needed to rebuild the tokenizer (JSON).
orbax writes each step into a temporary directory and renames it only when complete, so a crash
during a save never replaces the last good checkpoint. Preservation: the latest K plus the best
N by eval loss (lowest; orbax's ``BestN`` keeps the highest unless ``reverse=True``).

Readers open the directory read-only (:func:`open_read_only`): they never create, delete or lock
anything there, so they never block training, and they restore only what they need (the EMA
params of ``state``: a partial restore, no optimizer state is read or allocated) onto shardings of
their own mesh, which may differ from training's.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as cm

from vdm_jax.config import TrainingConfig

STATE, DATA, CONFIG, TOKENIZER = "state", "data", "config", "tokenizer"
EVAL_METRIC = "eval_loss"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(directory: str, cfg: TrainingConfig, *, read_only: bool = False) -> ocp.CheckpointManager:
    policies: list[Any] = [cm.LatestN(n=cfg.keep_checkpoints)]
    if cfg.keep_best > 0:
        policies.append(cm.BestN(get_metric_fn=lambda m: m[EVAL_METRIC], reverse=True, n=cfg.keep_best,
                                 keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies),
        enable_async_checkpointing=cfg.async_checkpointing,
        create=not read_only,
        read_only=read_only,
        # Step directories are created in the calling thread: an unwritable checkpoints/ fails the
        # save() call at once instead of a background thread that the others wait on for minutes.
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
        # Preemption: save when JAX's preemption sync point is reached (multi-host clusters).
        save_decision_policy=cm.AnySavePolicy([
            cm.FixedIntervalPolicy(cfg.checkpoint_every),
            cm.PreemptionCheckpointingPolicy(),
        ]),
    )
    return ocp.CheckpointManager(epath.Path(directory), options=options, item_handlers=_item_handlers())


def _item_handlers() -> dict[str, Any]:
    return {
        STATE: ocp.StandardCheckpointHandler(),
        DATA: grain.checkpoint.CheckpointHandler(),
        CONFIG: ocp.JsonCheckpointHandler(),
        TOKENIZER: ocp.JsonCheckpointHandler(),
    }


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iter: Any, config_dict: dict,
         tokenizer_spec: dict, *, metrics: dict | None = None, force: bool = False) -> bool:
    """Save (asynchronously for the arrays). Every process must call this."""
    items = {
        STATE: ocp.args.StandardSave(state),
        CONFIG: ocp.args.JsonSave(config_dict),
        TOKENIZER: ocp.args.JsonSave(tokenizer_spec),
    }
    if data_iter is not None:
        items[DATA] = grain.checkpoint.CheckpointSave(data_iter)
    return manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any, data_iter: Any = None
            ) -> tuple[Any, Any]:
    """Restore ``state`` onto the shardings in ``abstract_state`` (any mesh) and the data iterator."""
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    has_data = DATA in (manager.item_metadata(step) or {})
    if data_iter is not None and has_data:
        items[DATA] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored[STATE], (restored[DATA] if DATA in items else data_iter)


# ----------------------------------------------------------------------------------------------
# Read-only access (the evaluation job, the sample CLI)
# ----------------------------------------------------------------------------------------------


def open_read_only(workdir: str) -> ocp.CheckpointManager:
    """A read-only manager of ``WORKDIR/checkpoints``: it never creates, deletes or locks anything."""
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    handlers = {STATE: ocp.PyTreeCheckpointHandler(), CONFIG: ocp.JsonCheckpointHandler(),
                TOKENIZER: ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(epath.Path(checkpoint_dir(workdir)), options=options, item_handlers=handlers)


def existing_steps(workdir: str) -> list[int]:
    """Finalized checkpoint steps of a training workdir (orbax hides half-written ones)."""
    if not os.path.isdir(checkpoint_dir(workdir)):
        return []
    manager = open_read_only(workdir)
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def restore_json(manager: ocp.CheckpointManager, step: int, item: str) -> dict:
    """A JSON item (``config`` or ``tokenizer``) of checkpoint ``step``."""
    return manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]


def restore_ema_params(manager: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
    """EMA params of ``step`` placed on ``abstract_params``' shardings (partial restore)."""
    target = {"ema_params": abstract_params}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    restored = manager.restore(step, args=ocp.args.Composite(**{STATE: args}))
    return restored[STATE]["ema_params"]
