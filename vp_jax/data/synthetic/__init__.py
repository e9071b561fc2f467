"""The built-in synthetic video/audio/caption dataset (shapes with known labels)."""
from vp_jax.data.synthetic.dataset import (FLAT_LABELS, SyntheticConfig, SyntheticVideos,
                                           flat_labels)
from vp_jax.data.synthetic.scene import SceneConfig

__all__ = ["FLAT_LABELS", "SceneConfig", "SyntheticConfig", "SyntheticVideos", "flat_labels"]
