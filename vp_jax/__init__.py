"""vp_jax: an open JAX/Flax implementation of VideoPoet (arXiv 2312.14125)."""

__version__ = "0.1.0"
