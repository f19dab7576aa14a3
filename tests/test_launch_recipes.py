"""Cluster recipes: templates and rendered files parse, and their values come from flags and config."""

import os
import subprocess

import pytest
import yaml

from launch import render_recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/moving_digits.py:smoke"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def _bash_n(text, tmp_path):
    path = tmp_path / "script.sh"
    path.write_text(text)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kind", ["slurm", "slurm_array", "tpu"])
def test_shell_templates_pass_bash_n(kind, tmp_path):
    _bash_n(render_recipe.read_template(kind), tmp_path)


def test_jobset_template_is_yaml():
    doc = yaml.safe_load(render_recipe.read_template("k8s"))
    assert doc["kind"] == "JobSet"


def _code_lines(text):
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("# "))


def test_slurm_render_values_from_flags_and_config(tmp_path):
    cluster = render_recipe.Cluster(nodes=2, devices_per_node=4)
    text = render_recipe.render("slurm", SMOKE, "/shared/run1", cluster,
                                ["--config.training.num_train_steps=3"])
    _bash_n(text, tmp_path)
    assert "__" not in _code_lines(text)
    assert "#SBATCH --job-name=moving-digits-smoke" in text  # the config's name
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=4" in text
    assert "#SBATCH --gpus-per-node=4" in text
    assert f'CONFIG="{SMOKE}"' in text and 'WORKDIR="/shared/run1"' in text
    assert "--config.training.num_train_steps=3" in text
    per_node = render_recipe.render("slurm", SMOKE, "/w", render_recipe.Cluster(nodes=2, devices_per_node=4,
                                                                                per="node"))
    assert "#SBATCH --ntasks-per-node=1" in per_node


def test_tpu_render(tmp_path):
    cluster = render_recipe.Cluster(tpu_type="v5litepod-8", zone="europe-west4-b", project="proj")
    text = render_recipe.render("tpu", SMOKE, "/mnt/fs/run", cluster, ["--config.model.base_channels=16"])
    _bash_n(text, tmp_path)
    assert "__" not in _code_lines(text)
    assert 'ACCELERATOR_TYPE="v5litepod-8"' in text and 'ZONE="europe-west4-b"' in text
    assert 'TPU_NAME="moving-digits-smoke"' in text and "--worker=all" in text
    assert "--config.model.base_channels=16" in text


def test_k8s_render_gpu_and_tpu():
    cluster = render_recipe.Cluster(nodes=2, devices_per_node=4, image="reg/vdm:7")
    doc = yaml.safe_load(render_recipe.render("k8s", SMOKE, "/workdir/run", cluster))
    job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
    pod = job["template"]["spec"]
    c = pod["containers"][0]
    assert doc["metadata"]["name"] == "moving-digits-smoke"
    assert job["parallelism"] == job["completions"] == 2 and job["completionMode"] == "Indexed"
    assert c["image"] == "reg/vdm:7" and c["resources"]["limits"] == {"nvidia.com/gpu": 4}
    assert c["args"] == [f"--config={SMOKE}", "--workdir=/workdir/run"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["VDM_NUM_PROCESSES"] == "2"
    assert env["VDM_COORDINATOR_ADDRESS"] == "moving-digits-smoke-workers-0-0.moving-digits-smoke:1234"
    tpu = render_recipe.Cluster(nodes=2, devices_per_node=4, accelerator="tpu", gke_tpu_topology="2x4")
    pod = yaml.safe_load(render_recipe.render("k8s", SMOKE, "/workdir/run", tpu))[
        "spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-tpu-topology"] == "2x4"
    assert pod["containers"][0]["resources"]["limits"] == {"google.com/tpu": 4}


def test_device_count_checked_against_config_mesh_and_batch():
    # smoke: global batch 8 over data=-1 -> 3 devices cannot split it
    with pytest.raises(ValueError, match="global_batch_size"):
        render_recipe.render("slurm", SMOKE, "/w", render_recipe.Cluster(nodes=3, devices_per_node=1))
    with pytest.raises(ValueError, match="mesh"):
        render_recipe.render("slurm", SMOKE, "/w", render_recipe.Cluster(nodes=1, devices_per_node=6),
                             ["--config.mesh.tensor=4"])
    with pytest.raises(ValueError, match="mount_path"):
        render_recipe.render("k8s", SMOKE, "/elsewhere/run", render_recipe.Cluster(nodes=1))


def test_tpu_chip_counts():
    assert render_recipe.tpu_chips("v4-32") == 16
    assert render_recipe.tpu_chips("v5litepod-16") == 16
    assert render_recipe.tpu_chips("v6e-64") == 64
    with pytest.raises(ValueError, match="tpu_type"):
        render_recipe.tpu_chips("tpu16")


def test_fill_refuses_missing_placeholder():
    with pytest.raises(KeyError, match="__NODES__"):
        render_recipe.fill("nodes=__NODES__", {})


def test_cli_writes_file(tmp_path):
    out = tmp_path / "job.yaml"
    proc = subprocess.run(
        [os.path.join(REPO, ".venv/bin/python"), "-m", "launch.render_recipe", "--kind=k8s",
         f"--config={SMOKE}", "--workdir=/workdir/a", "--nodes=1", "--devices_per_node=8", f"--out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(out.read_text())["kind"] == "JobSet"
    bad = subprocess.run(
        [os.path.join(REPO, ".venv/bin/python"), "-m", "launch.render_recipe", "--kind=slurm",
         f"--config={SMOKE}", "--workdir=/w", "--nodes=3", "--devices_per_node=1"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "global_batch_size" in bad.stderr and "Traceback" not in bad.stderr
