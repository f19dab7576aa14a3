"""``train_and_evaluate`` in this process on 8 fake CPU devices.

* data x fsdp, data x tensor and data x context meshes train to the same losses and params as one
  device, with the params really sharded by the rules;
* a checkpoint saved under one mesh restores under another;
* gradient accumulation over microbatches gives the same update as one big batch (the step draws
  the noise for the whole batch before splitting it);
* the NaN/Inf guard stops the run naming the steps and never checkpoints the bad state;
* the keep policy holds the latest checkpoints plus the best by (lowest) eval loss.

Runs are shared across tests (and pytest-xdist workers) and the compilation cache is persistent for
this module: XLA compiles dominate the time (set VDM_TEST_COMPILATION_CACHE=DIR to keep it across
sessions).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import training_support as ts

STEPS = 3
BASE = {
    "training.num_train_steps": STEPS, "training.log_every": 1, "training.eval_batches": 0,
    "training.sample_every": 0, "training.checkpoint_every": 100,
    # every step updates the params (no warm-up from a zero learning rate)
    "optimizer.warmup_steps": 0, "optimizer.lr_schedule": "constant",
}
MESHES = {
    "single": {},  # with devices=[one device]
    "fsdp": {"mesh.data": 2, "mesh.fsdp": 4},
    "tensor": {"mesh.data": 4, "mesh.tensor": 2},
    "context": {"mesh.data": 2, "mesh.context": 4},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return ts.prepared_data_dir(tmp_path_factory)


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory, devices8):
    from jax.experimental.compilation_cache import compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    cache = ts.compilation_cache_dir(tmp_path_factory, "jax_cache_8dev")
    jax.config.update("jax_compilation_cache_dir", str(cache))
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


def _devices(name: str):
    return jax.devices()[:1] if name == "single" else None


def _config(data_dir, name: str = "single", **extra):
    return ts.smoke_config(data_dir, {**BASE, **MESHES[name], **extra})


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """``run(mesh_name)`` -> workdir of a STEPS-step smoke run on that mesh (once per session)."""
    root = ts.shared_dir(tmp_path_factory, "training_mesh_runs")

    def get(name: str):
        def build(workdir):
            from vdm_jax.training.loop import train_and_evaluate

            train_and_evaluate(_config(data_dir, name), str(workdir), devices=_devices(name))

        return ts.run_once(root / name, build)

    return get


def _assert_states_close(state: dict, ref: dict, what: str, rtol: float = 2e-5) -> None:
    """Params, EMA params and optimizer state (gradient moments) agree tree by tree.

    Adam moves a weight whose gradient is ~0 (e.g. a bias right before a GroupNorm) by up to +-lr
    whatever the gradient's rounding, so single elements may differ; whole trees must not (observed
    across meshes: ~6e-7 relative).
    """
    assert state.keys() == ref.keys()
    for prefix in ("params/", "ema_params/", "opt_state/"):
        keys = [k for k in ref if k.startswith(prefix) and ref[k].dtype.kind == "f"]
        diff = np.sqrt(sum(np.sum(np.square(state[k] - ref[k])) for k in keys))
        norm = np.sqrt(sum(np.sum(np.square(ref[k])) for k in keys))
        assert diff < rtol * norm, f"{prefix} ({what}): |diff| / |ref| = {diff / norm:.2e}"


def _state_metadata(workdir, step: int) -> dict:
    import orbax.checkpoint as ocp

    with ocp.PyTreeCheckpointer() as ckptr:
        tree = dict(ckptr.metadata(workdir / "checkpoints" / str(step) / "state").item_metadata)
    return {ts.path_key(p): m for p, m in jax.tree_util.tree_leaves_with_path(tree)}


def _axes(spec) -> set[str]:
    out = set()
    for entry in spec or ():
        out.update((entry,) if isinstance(entry, str) else tuple(a for a in (entry or ()) if a))
    return out


def _fraction_sharded(meta: dict, prefix: str, axis: str) -> float:
    """Fraction of the elements of the arrays under ``prefix`` that are split over mesh ``axis``."""
    leaves = [m for k, m in meta.items() if k.startswith(prefix)]
    total = sum(int(np.prod(m.shape)) for m in leaves)
    split = sum(int(np.prod(m.shape)) for m in leaves if axis in _axes(m.sharding.partition_spec))
    return split / total


# data x context exercises space-time context parallelism (frames sharded in spatial layers, height
# in temporal layers). jax/XLA 0.10.2 partitioned the ResBlock skip projection's weight gradient
# wrongly here (~55% error, loss exact) until the model pinned that output to the spatial layout
# (vdm_jax/models/unet.py:ResBlock); this case guards the workaround.
# fsdp and tensor also have model-level sharded = single-device tests (test_model_sharding.py); the
# whole training loop under them is in the slow run (`bash scripts/test.sh --slow`).
@pytest.mark.parametrize("name", [pytest.param("fsdp", marks=pytest.mark.slow),
                                  pytest.param("tensor", marks=pytest.mark.slow), "context"])
def test_mesh_trains_like_one_device(run, name):
    reference, workdir = run("single"), run(name)
    ref = {r["step"]: r for r in ts.metric_records(reference)}
    got = {r["step"]: r for r in ts.metric_records(workdir)}
    assert sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose([got[s][key] for s in got], [ref[s][key] for s in got], rtol=2e-5,
                                   err_msg=f"{key} under the {name} mesh differs from one device")
    _assert_states_close(ts.restore_numpy(workdir, STEPS), ts.restore_numpy(reference, STEPS), name)

    meta = _state_metadata(workdir, STEPS)
    if name == "fsdp":  # FSDP shards (nearly) every weight, and the optimizer state with it
        for prefix in ("params/", "ema_params/", "opt_state/"):
            assert _fraction_sharded(meta, prefix, "fsdp") > 0.9, prefix
    elif name == "tensor":  # tensor parallelism splits attention heads and MLP/conv outputs
        assert _fraction_sharded(meta, "params/", "tensor") > 0.8
        attn = [k for k in meta if k.startswith("params/") and k.endswith("/proj/q/kernel")]
        assert attn and all("tensor" in _axes(meta[k].sharding.partition_spec) for k in attn), attn
    else:  # context parallelism shards activations only: weights stay whole on the context axis
        assert _fraction_sharded(meta, "params/", "context") == 0.0


def test_checkpoint_restores_onto_another_mesh(run, data_dir):
    from vdm_jax import checkpointing as ckpt
    from vdm_jax.sharding.mesh import make_mesh
    from vdm_jax.training.program import TrainProgram

    saved = run("fsdp")
    expected = ts.restore_numpy(saved, STEPS)
    saved_specs = {k: m.sharding.partition_spec for k, m in _state_metadata(saved, STEPS).items()}
    for name in ("tensor", "single"):
        cfg = _config(data_dir, name)
        program = TrainProgram.create(cfg, make_mesh(cfg.mesh, _devices(name)))
        shardings = program.state_shardings
        manager = ckpt.make_manager(ckpt.checkpoint_dir(saved), cfg.training, read_only=True)
        try:
            restored, _ = ckpt.restore(manager, STEPS, program.abstract_state)
        finally:
            manager.close()
        leaves = jax.tree_util.tree_leaves_with_path(restored)
        targets = jax.tree.leaves(shardings)
        assert len(leaves) == len(targets) == len(expected)
        moved = 0
        for (path, x), sharding in zip(leaves, targets):
            key = ts.path_key(path)
            assert x.sharding == sharding, key
            np.testing.assert_array_equal(np.asarray(x), expected[key], err_msg=key)
            moved += tuple(sharding.spec) != tuple(saved_specs[key] or ())
        assert moved > 0, f"no array changed layout between the fsdp and the {name} mesh"


def test_gradient_accumulation_matches_one_batch(data_dir):
    """The real loss (noise levels, noise and CFG text drops drawn for the whole batch)."""
    from vdm_jax.sharding.mesh import make_mesh
    from vdm_jax.training.data import TrainData
    from vdm_jax.training.program import TrainProgram

    tiny = {"model.channel_mults": (1,), "model.attention_resolutions": ()}  # compiles faster
    configs = [_config(data_dir, **tiny, **{"training.text_drop_prob": 0.25, "training.microbatches": m})
               for m in (1, 2)]
    programs = [TrainProgram.create(cfg, make_mesh(cfg.mesh, jax.devices()[:1])) for cfg in configs]
    state = programs[0].init_state()
    it = TrainData.create(configs[0]).train_iterator()
    batches = [next(it) for _ in range(2)]
    results = []
    for program in programs:  # the same start state for both (the step donates its input: a copy each)
        s, m1 = program.train_step(jax.tree.map(jnp.copy, state), program.place_batch(batches[0]))
        s, m2 = program.train_step(s, program.place_batch(batches[1]))
        results.append((jax.device_get(s), [jax.device_get(m1), jax.device_get(m2)]))
    (s1, metrics1), (s2, metrics2) = results
    for a, b in zip(metrics1, metrics2):
        for key in ("loss", "grad_norm"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)
    np.testing.assert_array_equal(s2.step, s1.step)
    flat = [{ts.path_key(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(s)}
            for s in (s1, s2)]
    _assert_states_close(flat[1], flat[0], "microbatches=2 vs 1")


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    from vdm_jax.training import loop
    from vdm_jax.training.program import TrainProgram

    place, calls = TrainProgram.place_batch, []

    def poisoned(self, batch):  # the 2nd training batch is NaN (no eval batches in this run)
        calls.append(1)
        if len(calls) == 2:
            batch = {**batch, "video": np.full_like(batch["video"], np.nan)}
        return place(self, batch)

    monkeypatch.setattr(TrainProgram, "place_batch", poisoned)
    # Checkpoint every step but read metrics rarely: the guard must still stop before saving step 2.
    cfg = _config(data_dir, **{"training.checkpoint_every": 1, "training.log_every": 100})
    message = r"loss became nan.* between step 1 and step 2.*checkpoint \(step 1\)"
    with pytest.raises(loop.NonFiniteLossError, match=message):
        loop.train_and_evaluate(cfg, str(tmp_path), devices=jax.devices()[:1])
    assert ts.checkpoint_steps(tmp_path) == [1]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name] == []
    state = ts.restore_numpy(tmp_path, 1)
    assert all(np.all(np.isfinite(x)) for x in state.values() if x.dtype.kind == "f")
    assert all(r["step"] < 2 for r in ts.metric_records(tmp_path)), "a NaN step was logged as a good one"


def test_keep_policy_holds_latest_and_lowest_eval_loss(tmp_path):
    from vdm_jax import checkpointing as ckpt
    from vdm_jax.config import TrainingConfig

    cfg = TrainingConfig(keep_checkpoints=1, keep_best=1, checkpoint_every=1, async_checkpointing=False)
    manager = ckpt.make_manager(str(tmp_path), cfg)
    for step, eval_loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 4.0), (5, None)]:
        state = {"w": np.full((2,), step, np.float32)}
        ckpt.save(manager, step, state, None, {"step": step}, {}, force=True,
                  metrics=None if eval_loss is None else {ckpt.EVAL_METRIC: eval_loss})
    manager.wait_until_finished()
    assert sorted(manager.all_steps()) == [2, 5], "keep the latest (5) and the lowest eval loss (2)"
    manager.close()
