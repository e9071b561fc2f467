"""The offline tokenization job: media + captions -> token shards, text embeddings and a manifest.

In-process: `runner.tokenize_dataset`; Apache Beam: `beam_pipeline.tokenize_dataset_beam`; command
line: `python -m vp_jax.data.tokenize --help`. The output format is docs/data_format.md, read back
with `vp_jax.data.tokenized.read_tokenized`.
"""
from vp_jax.data.tokenize.features import TokenizeConfig, Tokenizers
from vp_jax.data.tokenize.runner import tokenize_dataset
from vp_jax.data.tokenize.sources import SyntheticSource, TfdsSource

__all__ = ["SyntheticSource", "TfdsSource", "TokenizeConfig", "Tokenizers", "tokenize_dataset"]
