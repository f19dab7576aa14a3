"""What may change when a training run is resumed with another config.

A workdir's checkpoints carry the config they were trained with. Resuming compares the new config
with it, field by field (dotted names). Fields that change the model or the meaning of the run
(the architecture, the diffusion parameterization, the data's shape and content, the tokenizer,
the optimizer's moments, batch size, seeds, ...) refuse the resume with one line naming every
differing field and both values. Fields that only change how long, how often or where the run
works are allowed (:data:`SAFE_FIELDS`, :data:`SAFE_SECTIONS`, the model's runtime fields), and so
is the learning-rate schedule: the new schedule applies from the resumed step as a function of the
step, as if it had been used from step 0 (the learning rate at the resumed step may jump; the
training loop records it).
"""

from __future__ import annotations

from typing import Any

from vdm_jax.config import Config, ConfigError, from_configdict, to_dict

# Model fields that are runtime choices (how the same weights are computed), not architecture.
RUNTIME_MODEL_FIELDS = frozenset({"attention_backend", "cudnn_min_seq_len", "dtype", "remat",
                                  "fast_cpu_conv_grad", "dropout",
                                  "noise_aug_logsnr_min", "noise_aug_logsnr_max"})
# Runtime model fields that still change training (dropout regularizes the optimisation; a cascade
# stage's training-only noise-augmentation range).
_TRAINING_MODEL_FIELDS = frozenset({"dropout", "noise_aug_logsnr_min", "noise_aug_logsnr_max"})

SAFE_FIELDS = frozenset({
    "name",
    # how long and how often
    "training.num_train_steps", "training.log_every", "training.eval_every", "training.eval_batches",
    "training.sample_every", "training.num_sample_prompts", "training.checkpoint_every",
    "training.keep_checkpoints", "training.keep_best", "training.profile_steps",
    "training.async_checkpointing", "training.resume_from", "training.init_weights_from",
    # gradient accumulation computes the same update (a memory knob)
    "training.microbatches",
    # the learning-rate schedule (see the module docstring for the rule)
    "optimizer.learning_rate", "optimizer.lr_schedule", "optimizer.warmup_steps", "optimizer.min_lr_ratio",
    # where the same data lives
    "data.data_dir", "data.source_dir", "data.worker_buffer_size",
})
SAFE_SECTIONS = ("mesh.", "sampling.", "evaluation.")
LR_FIELDS = frozenset({"training.num_train_steps", "optimizer.learning_rate", "optimizer.lr_schedule",
                       "optimizer.warmup_steps", "optimizer.min_lr_ratio"})


class ConfigDriftError(ValueError):
    """Resuming with a config that changes the run (one line naming every differing field)."""


def is_safe(field: str) -> bool:
    if field in SAFE_FIELDS or field.startswith(SAFE_SECTIONS):
        return True
    section, _, name = field.partition(".")
    return section == "model" and name in RUNTIME_MODEL_FIELDS - _TRAINING_MODEL_FIELDS


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _normalised(saved: dict | Config) -> dict:
    if isinstance(saved, Config):
        return to_dict(saved)
    try:  # fills defaults of fields the saved config predates
        return to_dict(from_configdict(saved))
    except (ConfigError, TypeError, ValueError):
        return saved


def differences(saved: dict | Config, given: Config) -> list[tuple[str, Any, Any]]:
    """(dotted field, value in the checkpoint, value in ``given``) for every field that differs."""
    old, new = _flat(_normalised(saved)), _flat(to_dict(given))
    missing = "<absent>"
    return [(k, old.get(k, missing), new.get(k, missing)) for k in sorted(old.keys() | new.keys())
            if old.get(k, missing) != new.get(k, missing)]


def check_resume(saved: dict | Config, given: Config, *, step: int, workdir: str
                 ) -> list[tuple[str, Any, Any]]:
    """The allowed changes between the checkpoint's config and ``given``; raises
    :class:`ConfigDriftError` if any field that changes the run differs."""
    changes = differences(saved, given)
    refused = [c for c in changes if not is_safe(c[0])]
    if refused:
        what = "; ".join(f"{f} is {b!r} here but {a!r} in the checkpoint" for f, a, b in refused)
        raise ConfigDriftError(
            f"cannot resume {workdir} (checkpoint step {step}) with a different config: {what}. These "
            "change the model or the meaning of the run: use a new --workdir, or the checkpoint's values")
    return changes
