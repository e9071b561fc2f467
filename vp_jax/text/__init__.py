"""Text conditioning: a frozen T5 v1.1 encoder (Flax NNX), checkpoint conversion, SentencePiece,
batched sharded embedding and an on-disk embedding cache (VideoPoet 3.1; docs/interfaces.md)."""
from vp_jax.text.cache import EmbeddingCache
from vp_jax.text.config import MAX_TEXT_TOKENS, PRESETS, T5EncoderConfig, get_config
from vp_jax.text.convert_common import CheckpointConversionError
from vp_jax.text.encoder import TextEmbeddings, TextEncoder
from vp_jax.text.model import T5Encoder, relative_position_bucket
from vp_jax.text.tokenizer import Tokenizer, TokenizedText

__all__ = ["EmbeddingCache", "MAX_TEXT_TOKENS", "PRESETS", "T5EncoderConfig", "get_config",
           "CheckpointConversionError", "TextEmbeddings", "TextEncoder", "T5Encoder",
           "relative_position_bucket", "Tokenizer", "TokenizedText"]
