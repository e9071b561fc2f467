"""vp_jax: VideoPoet in JAX/Flax.

Direct dependencies are pinned to a set installed and tested together (Python 3.11, CPU);
`constraints.txt` pins the whole resolved environment. The `tasks/` folder is installed as the
subpackage `vp_jax.tasks` (never as a top-level `tasks` module).
"""
import setuptools

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    # tfds builders (download_and_prepare) import it through etils.epath; not declared by tfds.
    "importlib_resources==7.1.0",
    "clu==0.0.12",
    "tensorboard==2.21.0",
    "gin-config==0.5.0",
    # 0.2.2+ ship protobuf-7 generated code; 0.2.1 works with protobuf 6.33 (needed by Beam).
    "sentencepiece==0.2.1",
    "numpy==2.4.6",
    # bfloat16 as a numpy dtype (T5 checkpoint conversion, tokenized text storage); jax needs it.
    "ml_dtypes==0.6.0",
    # Media I/O: PyAV (bundled FFmpeg) decodes/encodes video and audio (mp4/webm/mov/gif), soundfile
    # reads/writes wav, Pillow writes PNG/GIF, scipy does polyphase resampling.
    "av==18.1.0",
    "soundfile==0.14.0",
    "pillow==12.3.0",
    "scipy==1.17.1",
]

EXTRAS_REQUIRE = {
    # Tests include numerical parity against PyTorch references (HF transformers' T5). torch 2.13.0
    # is the CPU build (a local wheel on these machines); a looser pin pulls GBs of CUDA packages.
    # pytest-xdist runs the suite in 2 processes (`make test`): most tests are bound by XLA
    # compilation, which is single-threaded, so one process leaves the second core idle.
    "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "torch==2.13.0", "transformers==5.23.0",
             "safetensors==0.8.0"],
    # TPU runtime: jax 0.10.2 requires libtpu 0.0.42.*. Not in the default install: with libtpu
    # present jax prints TPU warnings at every start.
    "tpu": ["jax[tpu]==0.10.2"],
    # Tokenizing big corpora with Apache Beam (DirectRunner locally, Dataflow/Flink/Spark at scale).
    "beam": ["apache-beam==2.77.0"],
    # PyTorch reference packages, used only by parity tests and benchmarks. torch 2.13.0 is the CPU
    # build; vector-quantize-pytorch must be installed with --no-deps (see README).
    "torch": ["torch==2.13.0", "transformers==5.23.0", "einops", "einx", "loguru"],
}

setuptools.setup(
    name="vp_jax",
    version="0.1.0",
    description="VideoPoet in JAX/Flax: tokenizers, prefix LM, SR cascade, generation, evaluation.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["vp_jax", "vp_jax.*"]) + ["vp_jax.tasks"],
    package_dir={"vp_jax.tasks": "tasks"},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
