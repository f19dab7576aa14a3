"""launch.sample on a real smoke checkpoint: captioned GIF grid, extension from a video to mp4, bad input."""

import numpy as np
import pytest
from PIL import Image

from data_pipelines import moving_digits_spec as spec
from data_pipelines.video_io import save_video
from tests import test_eval_cli_common as common
from vdm_jax.evaluation import sample_cli as sampling
from vdm_jax.evaluation.loading import EvalInputError

PROMPTS = ["a big red 7 moves left fast", "a small blue square moves up slowly"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return common.ensure_trained(tmp_path_factory)[0]


def test_cli_writes_captioned_gif_grid(workdir, tmp_path):
    out = tmp_path / "grid.gif"
    args = [f"--workdir={workdir}", *(f"--prompt={p}" for p in PROMPTS), f"--out={out}", "--steps=2",
            "--sampler=ddim", "--guidance=1.5", "--seed=3", "--step=6"]
    r = common.run("launch.sample", args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 video(s) of 4 frames from step 6 (ddim, 2 steps, guidance 1.5)" in r.stdout
    gif = Image.open(out)
    assert gif.n_frames == 4
    # two 16x16 clips upscaled to >= 128 px side by side, each under a caption strip
    assert gif.size[0] >= 2 * 128 and gif.size[1] > 128
    frame = np.asarray(gif.convert("RGB"))
    assert frame.std() > 10  # not a blank image


def test_extension_from_a_video_file_to_mp4(workdir, tmp_path):
    """--cond_video + --num_frames above the trained 4: its last 2 frames start the output, which is
    extended autoregressively to 6 frames (restored onto this process's 8 devices)."""
    clip = spec.generate_example(11, 5, 6, 32)["video"]  # 32x32: resized to the model's 16x16
    cond = tmp_path / "cond.gif"
    save_video(str(cond), clip)
    out = tmp_path / "continued.mp4"
    req = sampling.SampleRequest(workdir=str(workdir), prompts=(PROMPTS[0],), out=str(out), steps=2,
                                 num_frames=6, cond_video=str(cond), context_frames=2)
    result = sampling.run_sample(req)
    videos = result["videos"]
    assert videos.shape == (1, 6, 16, 16, 3)
    context = sampling.read_video(str(cond), 16)[-2:]
    assert np.abs(videos[0, :2].astype(int) - context.astype(int)).max() <= 1  # given frames are kept
    import av

    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6


def test_unreadable_conditioning_video_names_the_file(workdir, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    req = sampling.SampleRequest(workdir=str(workdir), prompts=("x",), out=str(tmp_path / "o.gif"),
                                 cond_video=str(bad))
    with pytest.raises(EvalInputError, match=f"cannot read conditioning video {bad}"):
        sampling.run_sample(req)


@pytest.mark.parametrize("change, message", [
    (dict(out="x.avi"), r"--out must end in one of \('.gif', '.mp4'\)"),
    (dict(sampler="euler"), r"--sampler: unknown value 'euler'; allowed: \['ancestral'"),
    (dict(steps=0), r"--steps: must be >= 1"),
    (dict(step=4), r"no checkpoint for step 4 .*existing steps: \[3, 6\]"),
    (dict(num_frames=9, context_frames=4), r"--context_frames must be in \[1, 3\]"),
])
def test_bad_requests_fail_before_compute(workdir, tmp_path, change, message):
    base = dict(workdir=str(workdir), prompts=("x",), out=str(tmp_path / "o.gif"))
    with pytest.raises(EvalInputError, match=message):
        sampling.run_sample(sampling.SampleRequest(**{**base, **change}))


def test_prompts_from_file(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("a red 1\n\n  a blue 2  \n")
    assert sampling.load_prompts(["first"], str(f)) == ["first", "a red 1", "a blue 2"]
    with pytest.raises(EvalInputError, match="--prompts_file .*missing.txt"):
        sampling.load_prompts([], str(tmp_path / "missing.txt"))
    with pytest.raises(EvalInputError, match="at least one --prompt"):
        sampling.load_prompts([" "], None)
