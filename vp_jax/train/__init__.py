"""The one sharded trainer used by every model kind (LM, SR transformer, tokenizers)."""
