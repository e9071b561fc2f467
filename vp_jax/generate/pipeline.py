"""Task-level generation: media and prompts in, media out (paper 3.2, 4.1).

`Generator` joins the trained pieces: the text encoder embeds prompts, the tokenizers turn
conditioning frames / audio into codes, the task's `Layout` (built exactly as the seqio tasks built
it for training, from the data's shapes) places them in the prefix, the `Sampler` decodes the
outputs with the KV cache, and the tokenizers turn the sampled codes back into frames and audio.

    gen = Generator(lm, mesh, rules, video=vt, audio=at, text=enc, shapes=DataShapes(...))
    out = gen.generate("text_to_video", key, prompts=["a red circle moves left ..."])
    out.video   # float32 [B, T, H, W, 3] in [0, 1]
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from vp_jax.generate.sampling import Sampler, SamplingConfig
from vp_jax.parallel.sharding import batch_ways
from vp_jax.sequence import layout as L


@dataclasses.dataclass(frozen=True)
class DataShapes:
  """The shapes the LM was trained on (from the tokenized data's manifest): the layout format
  (`resolution` "128x128" / "128x224" and `num_frames` 17 / 41 name the format tokens), the latent
  grid of one latent frame, the number of text slots and of audio frames per clip."""
  latent_hw: tuple[int, int]
  resolution: str = "128x128"
  num_frames: int = 17
  text_length: int = L.TEXT_LENGTH
  num_audio_frames: int | None = None

  @classmethod
  def from_manifest(cls, manifest: dict) -> "DataShapes":
    """As `vp_jax.tasks.videopoet.register_tasks` reads them."""
    shapes = manifest["shapes"]
    lt, lh, lw = shapes["video_tokens"]
    text = shapes.get("text_embeddings")
    audio = shapes.get("audio_tokens")
    return cls(latent_hw=(lh, lw), resolution="128x224" if lh > lw else "128x128",
               num_frames=L.pixel_frames(lt), text_length=text[0] if text else L.TEXT_LENGTH,
               num_audio_frames=audio[1] if audio else None)


@dataclasses.dataclass
class Generation:
  """One `Generator.generate` call's output: the token rows, the code grids and decoded media."""
  task: str
  tokens: np.ndarray                 # int32 [B, L]: prefix + sampled outputs
  codes: dict[str, np.ndarray]       # Layout.extract: code grids by segment name (+ video/audio)
  video: np.ndarray | None = None    # float32 [B, T, H, W, 3] in [0, 1]: the whole clip
  audio: np.ndarray | None = None    # float32 [B, N] at 16 kHz


class Generator:
  """Task-conditioned sampling from a trained prefix LM: builds the task's layout, tokenizes the
  conditions (text through `text`, video through `video`, audio through `audio`), samples the
  output segments with the KV-cache sampler (CFG, top-k/p) and decodes them back to media."""

  def __init__(self, lm, mesh: jax.sharding.Mesh, rules, *, video, shapes: DataShapes,
               audio=None, text=None):
    self.lm, self.video, self.audio, self.text, self.shapes = lm, video, audio, text, shapes
    self.vocab = lm.cfg.vocab
    self.sampler = Sampler(lm, mesh, rules)
    self.ways = batch_ways(mesh, rules)

  def layout(self, task: str, *, with_text: bool, context_frames: int | None = None) -> L.Layout:
    """The token layout of `task` at the shapes the LM was trained on."""
    s = self.shapes
    return L.make_layout(task, vocab=self.vocab, resolution=s.resolution, num_frames=s.num_frames,
                         latent_hw=s.latent_hw, text_length=s.text_length, with_text=with_text,
                         num_audio_frames=s.num_audio_frames, context_frames=context_frames)

  def generate(self, task: str, key: jax.Array, *, prompts: Sequence[str] | None = None,
               video: np.ndarray | None = None, audio: np.ndarray | None = None,
               context_frames: int | None = None,
               sampling: SamplingConfig = SamplingConfig()) -> Generation:
    """Samples `task` for a batch of conditions.

    prompts: captions (tasks with text; optional-text tasks use them when given, as training did
    when the data had text); video: uint8 / [0, 1] float [B, T, H, W, 3] conditioning frames (the
    whole clip for video_to_audio / inpainting, at least the context for continuations; a single
    frame [B, 1, H, W, 3] for image_to_video); audio: [B, N] 16 kHz for audio inputs."""
    lay = self.layout(task, with_text=prompts is not None, context_frames=context_frames)
    codes: dict[str, np.ndarray] = {}
    batch = None
    if L.VIDEO_IN in lay.code_inputs:
      if video is None:
        raise ValueError(f"generate({task!r}): pass `video` conditioning frames.")
      want = lay.segment(L.VIDEO_IN).shape[0]
      frames = np.asarray(video)[:, :L.pixel_frames(want)]
      ids = np.asarray(self.video.encode(frames))                 # [B, T', H', W']
      if ids.shape[1] < want:
        raise ValueError(f"generate({task!r}): video gives {ids.shape[1]} latent frames, the "
                         f"layout's context needs {want}.")
      codes[L.VIDEO_IN], batch = ids[:, :want], ids.shape[0]
    if L.AUDIO_IN in lay.code_inputs:
      if audio is None or self.audio is None:
        raise ValueError(f"generate({task!r}): pass `audio` and build the Generator with an "
                         f"audio tokenizer.")
      want = lay.segment(L.AUDIO_IN).shape[1]
      codes[L.AUDIO_IN] = np.asarray(self.audio.encode(np.asarray(audio)))[..., :want]
      batch = codes[L.AUDIO_IN].shape[0]
    text = text_mask = None
    if prompts is not None:
      if self.text is None:
        raise ValueError(f"generate({task!r}): prompts need a text encoder.")
      emb = self.text.encode(list(prompts))
      text, text_mask = np.asarray(emb.embeddings), np.asarray(emb.mask)
      batch = len(prompts) if batch is None else batch
      if len(prompts) != batch:
        raise ValueError(f"generate({task!r}): {len(prompts)} prompts for {batch} conditions.")
    if batch is None:
      raise ValueError(f"generate({task!r}): nothing to condition on; pass prompts or media.")
    prefix = np.stack([lay.prefix({k: v[b] for k, v in codes.items()}) for b in range(batch)])
    # The batch is split over the mesh's batch axes: pad it with copies of the last row.
    pad = -batch % self.ways
    fill = lambda x: None if x is None else np.concatenate([x, np.repeat(x[-1:], pad, 0)])
    tokens = self.sampler.sample(lay, fill(prefix), key=key, config=sampling, text=fill(text),
                                 text_mask=fill(text_mask))[:batch]
    grids = lay.extract(tokens)
    out = Generation(task=task, tokens=tokens, codes=grids)
    if "video" in grids:
      out.video = np.asarray(self.video.decode(grids["video"]))
    if "audio" in grids and self.audio is not None:
      out.audio = np.asarray(self.audio.decode(grids["audio"]))
    return out
