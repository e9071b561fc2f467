"""The VideoPoet prefix LM: config and presets, attention with a KV cache, the model."""
