"""SoundStream (arXiv 2107.03312) in JAX: the audio tokenizer of VideoPoet (paper section 3.1).

config (presets) -> conv (causal 1-D convolutions) -> seanet (encoder/decoder) -> rvq (residual VQ)
-> spectral / discriminators / losses -> model (the trainable GAN) -> data (synthetic audio) ->
train (the gin entry point). The public encode/decode API is `vp_jax.tokenizers.audio_tokenizer`.
"""
