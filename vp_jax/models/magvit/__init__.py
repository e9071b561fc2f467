"""MAGVIT-v2 video tokenizer (arXiv 2310.05737) as used by VideoPoet: causal 3D CNN encoder/decoder,
lookup-free quantization with 2^18 codes, GAN training through the shared Trainer, inflation.

Files: config (hyperparameters, presets), conv (causal 3D conv), blocks, encoder, decoder, lfq,
tokenizer (encoder+LFQ+decoder), discriminator, perceptual (LPIPS + weight loading), losses, model
(the trainable two-group GAN), inflation, synthetic (moving-shape clips), train (entry point),
evaluate (held-out reconstruction PSNR and codebook usage).
"""
from vp_jax.models.magvit.config import PRESETS, MagvitConfig, PerceptualConfig, preset
from vp_jax.models.magvit.model import MagvitModel
from vp_jax.models.magvit.tokenizer import MagvitTokenizer

__all__ = ["PRESETS", "MagvitConfig", "PerceptualConfig", "preset", "MagvitModel",
           "MagvitTokenizer"]
