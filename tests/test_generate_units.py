"""Direct unit tests of `vp_jax.generate.pipeline.DataShapes`: its defaults (the paper's 128x128,
17-frame, 64-text-slot format), `from_manifest` on square / portrait / image / reduced-size
manifests (the latent grid, the format it implies, text slots and audio frames), and the layouts
`Generator.layout` builds from it (segment shapes, format and <res> tokens)."""
import dataclasses
import types

import pytest

from vp_jax.generate.pipeline import DataShapes, Generator
from vp_jax.models.prefix_lm.config import SMALL_VOCAB
from vp_jax.sequence import layout as L
from vp_jax.sequence.vocab import Special


def _manifest(video, text=None, audio=None):
  """The part of a tokenized dataset's manifest that DataShapes reads (shapes per example)."""
  shapes = {"video_tokens": list(video), "first_frame_tokens": [1, *video[1:]]}
  if text is not None:
    shapes["text_embeddings"] = list(text)
    shapes["text_mask"] = [text[0]]
  if audio is not None:
    shapes["audio_tokens"] = list(audio)
  return {"shapes": shapes, "num_examples": 3}


def _layout(shapes, task, **kw):
  """Generator.layout on a generator that has only its shapes and vocabulary."""
  return Generator.layout(types.SimpleNamespace(shapes=shapes, vocab=SMALL_VOCAB), task, **kw)


def test_defaults_are_the_paper_format_and_frozen():
  s = DataShapes(latent_hw=(16, 16))
  assert (s.resolution, s.num_frames, s.text_length, s.num_audio_frames) == (
      "128x128", 17, 64, None)
  assert s.text_length == L.TEXT_LENGTH
  assert s == DataShapes((16, 16), "128x128", 17, 64, None)
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.num_frames = 41


def test_from_manifest_paper_square_clip_with_text_and_audio():
  # 17 frames -> 5 latent frames of 16x16; T5-XL embeddings [64, 2048]; audio [4 levels, 106].
  s = DataShapes.from_manifest(_manifest([5, 16, 16], text=[64, 2048], audio=[4, 106]))
  assert s == DataShapes(latent_hw=(16, 16), resolution="128x128", num_frames=17, text_length=64,
                         num_audio_frames=106)


def test_from_manifest_portrait_41_frames_without_text_or_audio():
  # 41 frames -> 11 latent frames; 224x128 (H x W, the paper's "128x224") -> 28x16 latents.
  s = DataShapes.from_manifest(_manifest([11, 28, 16]))
  assert s == DataShapes(latent_hw=(28, 16), resolution="128x224", num_frames=41,
                         text_length=L.TEXT_LENGTH, num_audio_frames=None)


@pytest.mark.parametrize("video,frames", [([1, 4, 4], 1), ([2, 4, 4], 5), ([5, 4, 4], 17),
                                          ([11, 4, 4], 41)])
def test_from_manifest_pixel_frames_of_the_causal_grid(video, frames):
  # MAGVIT-v2: the first frame alone, then 4 frames per latent frame: 1 + 4 (T' - 1).
  s = DataShapes.from_manifest(_manifest(video))
  assert s.num_frames == frames and s.latent_hw == (4, 4) and s.resolution == "128x128"


def test_from_manifest_reduced_size_text_and_audio_lengths():
  # A CPU-sized dataset: 32x32 frames (4x4 latents), 16 text slots, 53 audio frames per clip.
  s = DataShapes.from_manifest(_manifest([5, 4, 4], text=[16, 32], audio=[4, 53]))
  assert (s.latent_hw, s.text_length, s.num_audio_frames) == ((4, 4), 16, 53)


def test_generator_layouts_follow_the_shapes():
  small = DataShapes.from_manifest(_manifest([5, 4, 4], text=[16, 32], audio=[4, 53]))
  t2v = _layout(small, "text_to_video", with_text=True)
  assert t2v.segment("text").length == 16
  assert t2v.segment(L.VIDEO_OUT).shape == (5, 4, 4)
  assert t2v.segment("format").token == Special.FORMAT_128x128_17 and not t2v.has("res")
  v2a = _layout(small, "video_to_audio", with_text=False)
  assert v2a.segment(L.VIDEO_IN).shape == (5, 4, 4)
  assert v2a.segment(L.AUDIO_OUT).shape == (SMALL_VOCAB.audio_levels, 53)       # (4, 53)
  # <bos> <task> <bov_i> 5 x 4 x 4 codes <eov_i> <boa_o> | 4 x 53 audio codes <eoa_o> <eos>
  assert (v2a.prefix_length, v2a.length) == (3 + 80 + 2, 85 + 212 + 2)
  portrait = DataShapes.from_manifest(_manifest([11, 28, 16]))
  uncond = _layout(portrait, "unconditional_video", with_text=False)
  assert uncond.has("res")
  assert uncond.segment("format").token == Special.FORMAT_128x224_41
  assert uncond.segment(L.VIDEO_OUT).shape == (11, 28, 16)
  # <bos> <task> <res> <format> <bov_o> | 11 x 28 x 16 codes <eov_o> <eos>
  assert (uncond.prefix_length, uncond.length) == (5, 5 + 11 * 28 * 16 + 2)
