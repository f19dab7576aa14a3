"""launch.distributed: where the process topology comes from, logging prefix, single-process no-op."""

import logging as std_logging

import pytest
from absl import logging

from launch import distributed

SLURM = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "16",
         "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}


def test_single_process_when_nothing_is_set():
    assert distributed.plan(env={}).method == "single"
    assert distributed.plan(num_processes=1, env={}).method == "single"


def test_explicit_flags_win_over_environment():
    env = {**SLURM, "VDM_NUM_PROCESSES": "4", "VDM_COORDINATOR_ADDRESS": "x:1", "VDM_PROCESS_ID": "1"}
    p = distributed.plan("host0:1234", 2, 1, env=env)
    assert p.method == "flags"
    assert p.kwargs == {"coordinator_address": "host0:1234", "num_processes": 2, "process_id": 1}
    assert distributed.plan("h:1", 2, 0, local_device_ids=[0, 1], env={}).kwargs["local_device_ids"] == [0, 1]


@pytest.mark.parametrize("args, match", [
    (("host0", 2, 0), "host:port"),
    ((None, 2, 0), "coordinator_address"),
    (("h:1", 2, 2), r"process_id must be in \[0, 2\)"),
    (("h:1", None, 0), "num_processes"),
])
def test_bad_flags_are_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        distributed.plan(*args, env={})


def test_kubernetes_env_and_jobset_completion_index():
    env = {"VDM_COORDINATOR_ADDRESS": "run-workers-0-0.run:1234", "VDM_NUM_PROCESSES": "4",
           "JOB_COMPLETION_INDEX": "2"}
    p = distributed.plan(env=env)
    assert p.method == "env"
    assert p.kwargs == {"coordinator_address": "run-workers-0-0.run:1234", "num_processes": 4,
                        "process_id": 2}
    assert distributed.plan(env={**env, "VDM_PROCESS_ID": "3"}).kwargs["process_id"] == 3
    with pytest.raises(ValueError, match="VDM_NUM_PROCESSES"):
        distributed.plan(env={"VDM_NUM_PROCESSES": "four"})
    with pytest.raises(ValueError, match="process_id"):
        distributed.plan(env={"VDM_NUM_PROCESSES": "2", "VDM_COORDINATOR_ADDRESS": "a:1"})


def test_slurm_and_tpu_autodetect_and_switch_off():
    assert distributed.plan(env=SLURM).method == "slurm"
    assert distributed.plan(env={**SLURM, "SLURM_NTASKS": "1"}).method == "single"
    assert distributed.plan(env={**SLURM, "VDM_DISTRIBUTED": "0"}).method == "single"
    assert distributed.plan(env={"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}).method == "tpu"
    assert distributed.plan(env={"TPU_WORKER_HOSTNAMES": "w0"}).method == "single"
    assert distributed.plan(env={"MEGASCALE_COORDINATOR_ADDRESS": "c:8080"}).method == "tpu"


def test_initialize_single_process_is_a_noop(devices8):
    info = distributed.initialize()
    assert info.method == "single" and info.process_count == 1 and info.process_index == 0
    assert info.device_count == 8 and info.is_primary and distributed.is_primary()


def test_initialize_after_backend_start_refuses_multiprocess(devices8):
    with pytest.raises(RuntimeError, match="before any JAX computation"):
        distributed.initialize("localhost:1", 2, 1)


def test_logging_prefix_per_process(tmp_path):
    info = distributed.ProcessInfo("flags", 1, 2, 4, 8)
    handler = logging.get_absl_handler()
    before = list(handler.filters)
    try:
        distributed.setup_logging(info)
        distributed.setup_logging(info)  # idempotent
        prefixes = [f for f in handler.filters if isinstance(f, distributed._ProcessPrefix)]
        assert len(prefixes) == 1
        record = std_logging.LogRecord("absl", std_logging.INFO, __file__, 1, "step %d", (3,), None)
        prefixes[0].filter(record)
        prefixes[0].filter(record)
        assert record.getMessage() == "[p1] step 3"
    finally:
        handler.filters[:] = before
