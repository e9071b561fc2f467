"""What the end-to-end demo runs: sizes, step counts and sampling settings, as named presets.

`cpu` is the README's main command (built to finish in under 20 minutes on a 2-core CPU); `test` is
the same pipeline at sizes the test suite can afford. The codebooks are the CPU LM vocabulary's
(`SMALL_VOCAB`: 2^10 visual codes = 10 LFQ bits, 4 x 256 audio codes), so tokenizer codes map onto
the LM's ids one to one.

Choices where the paper is silent or out of reach on a CPU (its authors' recipe, scaled down):
- The video tokenizer is pretrained on still frames, inflated and then trained on clips (paper 3.1:
  "image training, inflation and video training"); images cost 1/17 of a clip per step, so most of
  the budget goes there. No discriminator (it pays off after tens of thousands of steps).
- The audio tokenizer trains on crops of the dataset's own soundtracks, reconstruction losses only.
- The LM trains on a mixture of exactly the tasks the demo samples (text-to-video,
  image-to-video, future prediction, video-to-audio) plus text-to-image (the paper's image data),
  with alternating gradient descent; the other tasks are registered too but get no steps.
"""
from __future__ import annotations

import dataclasses

from vp_jax.data.synthetic.dataset import SyntheticConfig
from vp_jax.generate.sampling import SamplingConfig
from vp_jax.models.magvit import config as magvit_config
from vp_jax.models.prefix_lm import config as lm_config
from vp_jax.models.soundstream import config as soundstream_config

DEMO_MIXTURE = (("text_to_video", 0.3), ("image_to_video", 0.2), ("future_prediction", 0.15),
                ("video_to_audio", 0.25), ("text_to_image", 0.1))


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  videos: SyntheticConfig = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=256)
  images: SyntheticConfig = SyntheticConfig(resolution="32x32", num_frames=1, num_examples=256)

  # `tiny` keeps the entropy weight 0.1 (the `small` recipe uses 0.02): on this stage, image
  # 0.02 / video 0.02 gave 16.5 dB held-out with 39 codes used, 0.1 / 0 17.3 dB, 0.1 / 0.1 17.4 dB.
  # Reconstruction weight 10 and 3,000 image steps (stop 43; docs/demo.md "Tokenizer budget"): with
  # the `tiny` defaults (weight 1, 400 image steps) the entropy and commitment terms outweighed the
  # reconstruction and the clips came back as grey blobs (17.1 dB, detector: colour 6 % of
  # reconstructions); image steps run at ~30/s, so the image stage is where more steps are cheap.
  video_tokenizer: magvit_config.MagvitConfig = magvit_config.preset(
      "tiny", embedding_dim=10, gan_weight=0.0, disc_start_step=10 ** 9, recon_weight=10.0)
  image_steps: int = 3000           # image pretraining (2D model), then inflation
  image_batch: int = 16
  image_lr: float = 2e-3
  video_steps: int = 150            # video training of the inflated model
  video_batch: int = 4
  # Lower than the image stage's: the inflated model starts at the image model's quality, and a
  # full learning rate spends the first steps undoing it (held-out PSNR after the 150 steps: 16.7 dB
  # at 2e-3, 17.4 at 5e-4, 17.3 at 1e-4; docs/demo.md).
  video_lr: float = 5e-4

  audio_tokenizer: soundstream_config.SoundStreamConfig = soundstream_config.preset(
      "small", codebook_size=256, adversarial_start_step=10 ** 9)
  audio_steps: int = 200
  audio_batch: int = 8
  audio_clip_samples: int = 8000    # 0.5 s crops of the 2.125 s soundtracks
  audio_lr: float = 2e-3

  lm: lm_config.PrefixLMConfig = lm_config.preset("cpu", text_dim=128)
  lm_steps: int = 400
  lm_batch: int = 8
  lm_lr: float = 2e-3
  mixture: tuple[tuple[str, float], ...] = DEMO_MIXTURE

  num_samples: int = 4              # per generated task, written as media
  quality_samples: int = 16         # text-to-video samples scored by the detector
  display_scale: int = 4            # media and contact sheet upscaled (nearest) by this factor
  sampling: SamplingConfig = SamplingConfig(temperature=0.8, top_k=64, guidance_scale=2.0)
  eval_clips: int = 16              # held-out clips for tokenizer PSNR and the detector baseline
  seed: int = 0

  def __post_init__(self):
    vocab = self.lm.vocab
    if 2 ** self.video_tokenizer.embedding_dim != vocab.visual_codes:
      raise ValueError(f"DemoConfig: the video tokenizer has 2^{self.video_tokenizer.embedding_dim}"
                       f" codes, the LM vocabulary {vocab.visual_codes}.")
    a = self.audio_tokenizer
    if (a.num_levels, a.codebook_size) != (vocab.audio_levels, vocab.audio_codes_per_level):
      raise ValueError(f"DemoConfig: the audio tokenizer has {a.num_levels} x {a.codebook_size} "
                       f"codes, the LM vocabulary {vocab.audio_levels} x "
                       f"{vocab.audio_codes_per_level}.")
    if self.videos.hw != self.images.hw or self.images.num_frames != 1:
      raise ValueError("DemoConfig: `images` must be still images at the videos' resolution.")
    for name in ("image_steps", "video_steps", "audio_steps", "lm_steps", "num_samples",
                 "quality_samples", "eval_clips", "display_scale"):
      if getattr(self, name) < 1:
        raise ValueError(f"DemoConfig.{name}={getattr(self, name)} must be >= 1.")


PRESETS = {
    "cpu": DemoConfig(),
    # Batches are multiples of 8: the test suite runs on 8 simulated devices.
    "test": DemoConfig(
        videos=SyntheticConfig(resolution="32x32", num_frames=17, num_examples=16),
        images=SyntheticConfig(resolution="32x32", num_frames=1, num_examples=8),
        image_steps=2, image_batch=8, video_steps=2, video_batch=8,
        audio_tokenizer=soundstream_config.preset(
            "small", codebook_size=256, adversarial_start_step=10 ** 9, channels=4, embed_dim=16,
            kmeans_iters=1, mel_windows=(64, 256), stft_disc_ffts=(256,), wave_disc_scales=1),
        audio_steps=2, audio_batch=8, audio_clip_samples=3200,
        lm=lm_config.preset("tiny", text_dim=128), lm_steps=3, lm_batch=8,
        num_samples=1, quality_samples=2, eval_clips=2, display_scale=1),
}


def preset(name: str, **overrides) -> DemoConfig:
  if name not in PRESETS:
    raise ValueError(f"Unknown demo preset {name!r}; known: {sorted(PRESETS)}.")
  return dataclasses.replace(PRESETS[name], **overrides)
