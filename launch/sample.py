"""Generate videos from a trained checkpoint (its saved config: no --config needed).

    python -m launch.sample --workdir=/tmp/md --prompt="a big red 7 moves left fast" --out=red7.gif
    python -m launch.sample --workdir=/tmp/md --prompts_file=prompts.txt --out=grid.mp4 \\
        --sampler=dpm_solver_pp --steps=32 --guidance=3 --seed=1 --negative_prompt="blurry, static"
    python -m launch.sample --workdir=/tmp/md --prompt="..." --cond_video=clip.mp4 --context_frames=2 \\
        --num_frames=24 --out=continued.gif

Cascades and conditioning tasks (each model from its own checkpoint and saved config):

    python -m launch.sample --workdir=BASE --cascade=SSR_WORKDIR[,TSR_WORKDIR...] --prompt="..." \
        --out=final.gif --stages_out=stages.gif      # every stage's output side by side
    python -m launch.sample --workdir=/tmp/md --prompt="..." --cond_image=frame.png --out=i2v.gif
    python -m launch.sample --workdir=/tmp/md --prompt="..." --cond_video=low_fps.gif \
        --interpolate_stride=2 --out=interpolated.gif
    python -m launch.sample --workdir=SSR_WORKDIR --prompt="..." --low_res_video=clip16.gif --out=sr.gif
    python -m launch.sample --workdir=BASE32 --prompt="..." --low_res_video=clip16.gif --sr_factor=2 \
        --out=sr_guided.gif                          # reconstruction guidance (single-resolution model)

Several prompts give a captioned grid. ``--cond_video``: its last ``--context_frames`` frames
(resized to the model's resolution) are given and continued (reconstruction guidance);
``--num_frames`` above the trained length extends autoregressively.
"""

from __future__ import annotations

import sys

from absl import app, flags

from launch import cli
from vdm_jax.evaluation import sample_cli
from vdm_jax.evaluation.loading import EvalInputError

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "A text prompt (repeat the flag for several).")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "A text file with one prompt per line.")
_OUT = flags.DEFINE_string("out", None, "Output video: FILE.gif or FILE.mp4.")
_STEP = flags.DEFINE_string("step", "latest", "Checkpoint step: an integer or 'latest'.")
_SAMPLER = flags.DEFINE_string("sampler", None, "ancestral | ddim | dpm_solver_pp | langevin_pc "
                                                "(default: the checkpoint config's sampling.name).")
_STEPS = flags.DEFINE_integer("steps", None, "Sampling steps (default: sampling.steps).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "Classifier-free guidance weight w (VDM convention; "
                                                 "default: sampling.guidance_weight).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 0, "Frames to generate (0: the trained length; more: "
                                                    "autoregressive extension).")
_COND_VIDEO = flags.DEFINE_string("cond_video", "", "A video (or image) whose last frames are continued.")
_CONTEXT = flags.DEFINE_integer("context_frames", 0, "Frames given to the model for prediction/extension "
                                                     "(0: evaluation.prediction_context_frames).")
_FPS = flags.DEFINE_float("fps", 8.0, "Frames per second of the written video.")
_NEGATIVE = flags.DEFINE_string("negative_prompt", "", "Prompt for the unconditional branch of "
                                "classifier-free guidance (default: the learned null text).")
_TEXT_ENCODER = flags.DEFINE_string("text_encoder", "", "Frozen T5 directory of a model trained on stored "
                                                        "embeddings (default: its data.text_encoder_dir).")
_CASCADE = flags.DEFINE_list("cascade", [], "Stage workdirs (spatial_sr / temporal_sr) run after --workdir's "
                             "base model, in order, each from its latest checkpoint.")
_STAGES_OUT = flags.DEFINE_string("stages_out", "", "With --cascade: also write every model's output side "
                                                   "by side (upscaled to the final size) to this file.")
_COND_IMAGE = flags.DEFINE_string("cond_image", "", "Image-to-video: this image (or a video's first frame) "
                                                    "is frame 0.")
_INTERPOLATE = flags.DEFINE_integer("interpolate_stride", 0, "Frame interpolation: the frames of "
                                    "--cond_video are placed at 0, k, 2k, ... and the others generated.")
_LOW_RES = flags.DEFINE_string("low_res_video", "", "Super-resolve this video: with a stage's --workdir, or "
                               "by reconstruction guidance of a single-resolution model (--sr_factor).")
_SR_FACTOR = flags.DEFINE_integer("sr_factor", 0, "Factor of reconstruction-guidance super-resolution.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        prompts = sample_cli.load_prompts(_PROMPT.value, _PROMPTS_FILE.value)
        request = sample_cli.SampleRequest(
            workdir=_WORKDIR.value, prompts=tuple(prompts), out=_OUT.value, step=_STEP.value,
            sampler=_SAMPLER.value, steps=_STEPS.value, guidance=_GUIDANCE.value, seed=_SEED.value,
            num_frames=_NUM_FRAMES.value, cond_video=_COND_VIDEO.value, context_frames=_CONTEXT.value,
            fps=_FPS.value, negative_prompt=_NEGATIVE.value, text_encoder_dir=_TEXT_ENCODER.value,
            cascade=tuple(_CASCADE.value), stages_out=_STAGES_OUT.value, cond_image=_COND_IMAGE.value,
            interpolate_stride=_INTERPOLATE.value, low_res_video=_LOW_RES.value, sr_factor=_SR_FACTOR.value)
        result = sample_cli.run_sample(request)
    except EvalInputError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {result['path']}: {len(prompts)} video(s) of {result['videos'].shape[1]} frames from step "
          f"{result['step']} ({result['sampler']}, {result['steps']} steps, guidance {result['guidance']:g}) "
          f"in {result['seconds']:.1f}s")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
