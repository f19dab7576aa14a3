"""Read-only access to a training workdir: steps, saved config/tokenizer, EMA params on any mesh.

The evaluation job and the sample CLI never write into ``DIR/checkpoints``: they open it
read-only (``vdm_jax.checkpointing.open_read_only``) and restore only the EMA params onto the
shardings of a ``ModelPlan`` built for their own mesh, which may differ from training's (another
device count, another topology).
"""

from __future__ import annotations

import base64
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from data_pipelines import tokenizers
from data_pipelines.text_embeddings import TextEmbeddingsError, encoder_identity
from vdm_jax import checkpointing as ckpt
from vdm_jax.config import Config, ConfigError, MeshConfig, from_configdict, to_dict
from vdm_jax.config_drift import RUNTIME_MODEL_FIELDS
from vdm_jax.models.plan import ModelPlan
from vdm_jax.sharding.mesh import make_mesh


class EvalInputError(ValueError):
    """Bad user input to the evaluation job or the sample CLI (one-line message)."""


# ----------------------------------------------------------------------------------------------
# Steps and saved items
# ----------------------------------------------------------------------------------------------


def available_steps(workdir: str) -> list[int]:
    """Finalized checkpoint steps of a training workdir (orbax hides half-written ones)."""
    return ckpt.existing_steps(workdir)


def resolve_step(workdir: str, step: int | str | None) -> int:
    """``None``/'latest' -> the newest step; an int (or digit string) must exist."""
    steps = available_steps(workdir)
    directory = ckpt.checkpoint_dir(workdir)
    if not steps:
        raise EvalInputError(f"no checkpoints in {directory} (has training saved one yet?)")
    if step is None or str(step) == "latest":
        return steps[-1]
    try:
        wanted = int(step)
    except (TypeError, ValueError):
        raise EvalInputError(f"--step must be an integer or 'latest', got {step!r}") from None
    if wanted not in steps:
        raise EvalInputError(f"no checkpoint for step {wanted} in {directory}; existing steps: {steps}")
    return wanted


def saved_config(manager: ocp.CheckpointManager, step: int) -> Config:
    """The resolved config the checkpoint was trained with."""
    try:
        return from_configdict(ckpt.restore_json(manager, step, ckpt.CONFIG))
    except ConfigError as e:
        raise EvalInputError(f"the config saved with checkpoint step {step} is invalid here: {e}") from None


def saved_tokenizer(manager: ocp.CheckpointManager, step: int) -> Any:
    return tokenizer_from_spec(ckpt.restore_json(manager, step, ckpt.TOKENIZER))


def check_text_encoder(manager: ocp.CheckpointManager, step: int, config: Config) -> None:
    """A model trained on stored frozen-encoder embeddings must be prompted through the same
    encoder: compare ``data.text_encoder_dir``'s fingerprint with the one saved at training."""
    saved = ckpt.restore_json(manager, step, ckpt.TOKENIZER).get("text_encoder")
    if not saved:
        return
    try:
        now = encoder_identity(config.data.text_encoder_dir) if config.data.text_encoder_dir else None
    except TextEmbeddingsError as e:
        raise EvalInputError(f"data.text_encoder_dir: {e}") from None
    if now is None or now["fingerprint"] != saved["fingerprint"]:
        raise EvalInputError(
            f"checkpoint step {step} was trained on embeddings of the text encoder {saved['path']} "
            f"(fingerprint {saved['fingerprint'][:16]}), but data.text_encoder_dir is "
            f"{config.data.text_encoder_dir!r}"
            + (f" (fingerprint {now['fingerprint'][:16]})" if now else ""))


def tokenizer_from_spec(spec: dict) -> Any:
    """Rebuild the training tokenizer from the checkpoint's ``tokenizer`` item (no data needed)."""
    kind = spec.get("kind")
    if kind == "byte":
        return tokenizers.ByteTokenizer()
    if kind == "sentencepiece" and "model_b64" in spec:
        return tokenizers.SentencePieceTokenizer(base64.b64decode(spec["model_b64"]))
    raise EvalInputError(f"checkpoint tokenizer spec is not usable: kind={kind!r}, keys={sorted(spec)}")


# ----------------------------------------------------------------------------------------------
# --config vs the checkpoint
# ----------------------------------------------------------------------------------------------


def config_mismatches(saved: Config, given: Config) -> list[tuple[str, Any, Any]]:
    """(dotted field, value in the checkpoint, value in ``given``) for every field that changes what
    the weights mean: the model architecture, the diffusion parameterization, the tokenizer."""
    out = []
    pairs = [("model", k) for k in to_dict(saved.model) if k not in RUNTIME_MODEL_FIELDS]
    pairs += [("diffusion", k) for k in to_dict(saved.diffusion)]
    pairs += [("data", "tokenizer")]
    if saved.data.tokenizer.value == "sentencepiece":
        pairs += [("data", "sentencepiece_vocab_size")]
    for section, field in pairs:
        a = to_dict(getattr(getattr(saved, section), field))
        b = to_dict(getattr(getattr(given, section), field))
        if a != b:
            out.append((f"{section}.{field}", a, b))
    return out


def check_config_matches(saved: Config, given: Config, step: int) -> None:
    bad = config_mismatches(saved, given)
    if bad:
        field, a, b = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(f for f, _, _ in bad[1:])})" if len(bad) > 1 else ""
        raise EvalInputError(f"--config does not match the checkpoint at step {step}: {field} is {b!r} in "
                             f"--config but {a!r} in the checkpoint{more}")


# ----------------------------------------------------------------------------------------------
# The evaluation's mesh
# ----------------------------------------------------------------------------------------------


def inference_mesh(config: Config, devices: list | None = None) -> jax.sharding.Mesh:
    """The config's mesh on the local devices, or pure data parallelism when it does not fit them."""
    try:
        return make_mesh(config.mesh, devices)
    except ConfigError as e:
        logging.warning("mesh from the config does not fit %d devices (%s): using data=-1",
                        len(devices or jax.devices()), e)
        return make_mesh(MeshConfig(rules=config.mesh.rules), devices)


def restore_for_inference(manager: ocp.CheckpointManager, step: int, config: Config):
    """(tokenizer, mesh, model plan, EMA params) of checkpoint ``step`` under ``config``: what the
    sample CLI and every cascade stage load (the text encoder checked against the checkpoint's)."""
    tokenizer = saved_tokenizer(manager, step)
    check_text_encoder(manager, step, config)
    mesh = inference_mesh(config)
    plan = ModelPlan.create(config, mesh)
    return tokenizer, mesh, plan, ckpt.restore_ema_params(manager, step, plan.abstract_params)
