"""Sequence layouts of the VideoPoet pretraining tasks (paper 4.1, Figure 3, Table 1).

A `Layout` is the plan of one task's token sequence for given shapes: an ordered list of segments
(special tokens, reserved text slots, visual and audio code segments), the prefix length and which
positions are outputs. The same object builds training examples from tokenizer codes, tells the
sampler which ids are legal at every output position, and inverts generated ids back into video and
audio code grids, so the three can never disagree.

    <bos> <task> [<bot_i> text x 64 <eot_i>] [<bov_i> visual <eov_i>]... [<boa_i> audio <eoa_i>]
          [<res>] <format> <bov_o> | video_out <eov_o> [<boa_o> audio_out <eoa_o>] <eos>
                                   ^ prefix_length: everything left of it attends bidirectionally

Choices where the paper leaves a detail open (made as its authors describe the model):
- The first output's begin token (`<bov_o>` or `<boa_o>`) closes the prefix: it is fixed by the task,
  so predicting it teaches nothing, and the last prefix position then predicts the first output code
  while seeing the whole prefix. Everything after it is an output and carries the loss.
- `<task>` has one token per output kind (video, audio, video + audio): text-to-video,
  image-to-video and unconditional generation share one, as the paper says.
- `<res>` appears only for the 128x224 portrait output (paper: "128x128 is assumed otherwise"); a
  format token names each of the 4 resolution x length combinations and is always present before a
  video output.
- Text-to-image leaves out `<eos>` (paper 4.1) and also `<eov_o>`, so the model keeps generating
  video tokens after the first frame; it shares the 17-frame 128x128 format token with video.
- Continuation tasks (future prediction, image-to-video, audio-video continuation) output only what
  follows the context; `extract` re-joins context and continuation into the full grids.
- Audio-video continuation conditions on the first `context_frames` latent frames and the audio of
  the same span (floor(pixel frames x audio_frames / frames) audio frames).
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Mapping

import numpy as np

from vp_jax.sequence.vocab import FORMAT_TOKENS, PAPER, RESOLUTIONS, Special, Vocabulary

TEXT_LENGTH = 64          # T5 tokens per caption (paper 3.1)
FPS = 8                   # video frame rate (paper 4.1)
AUDIO_FRAMES_PER_SECOND = 50   # SoundStream at 16 kHz with a total stride of 320


class LayoutError(ValueError):
  """A task/shape combination or token array that does not fit the layout; names the segment."""


class Task(str, enum.Enum):
  UNCONDITIONAL_VIDEO = "unconditional_video"
  TEXT_TO_VIDEO = "text_to_video"
  TEXT_TO_IMAGE = "text_to_image"
  FUTURE_PREDICTION = "future_prediction"
  IMAGE_TO_VIDEO = "image_to_video"
  INPAINTING = "inpainting"
  OUTPAINTING = "outpainting"
  STYLIZATION = "stylization"
  AUDIO_TO_VIDEO = "audio_to_video"
  VIDEO_TO_AUDIO = "video_to_audio"
  AUDIO_VIDEO_CONTINUATION = "audio_video_continuation"


@dataclasses.dataclass(frozen=True)
class _TaskSpec:
  text: str                 # "required" | "optional" | "none"
  visual_inputs: tuple[str, ...]   # "video" (full grid), "context" (first latent frames), "flow"
  audio_input: str | None   # None | "full" | "context"
  video_output: str | None  # None | "full" | "image" | "continuation"
  audio_output: str | None  # None | "full" | "continuation"
  task_token: Special


_SPECS: dict[Task, _TaskSpec] = {
    Task.UNCONDITIONAL_VIDEO: _TaskSpec("none", (), None, "full", None, Special.TASK_VIDEO),
    Task.TEXT_TO_VIDEO: _TaskSpec("required", (), None, "full", None, Special.TASK_VIDEO),
    Task.TEXT_TO_IMAGE: _TaskSpec("required", (), None, "image", None, Special.TASK_VIDEO),
    Task.FUTURE_PREDICTION: _TaskSpec("optional", ("context",), None, "continuation", None,
                                      Special.TASK_VIDEO),
    Task.IMAGE_TO_VIDEO: _TaskSpec("optional", ("context",), None, "continuation", None,
                                   Special.TASK_VIDEO),
    Task.INPAINTING: _TaskSpec("optional", ("video",), None, "full", None, Special.TASK_VIDEO),
    Task.OUTPAINTING: _TaskSpec("optional", ("video",), None, "full", None, Special.TASK_VIDEO),
    Task.STYLIZATION: _TaskSpec("required", ("flow",), None, "full", None, Special.TASK_VIDEO),
    Task.AUDIO_TO_VIDEO: _TaskSpec("optional", (), "full", "full", None, Special.TASK_VIDEO),
    Task.VIDEO_TO_AUDIO: _TaskSpec("optional", ("video",), None, None, "full", Special.TASK_AUDIO),
    Task.AUDIO_VIDEO_CONTINUATION: _TaskSpec("optional", ("context",), "context", "continuation",
                                             "continuation", Special.TASK_AUDIO_VIDEO),
}

# Names of the code segments `build` takes and `extract` returns.
VIDEO_IN, FIRST_FRAME_IN, AUDIO_IN, VIDEO_OUT, AUDIO_OUT = (
    "video_in", "first_frame_in", "audio_in", "video_out", "audio_out")


@dataclasses.dataclass(frozen=True)
class Segment:
  """A named run of positions in a layout: specials, text slots, or a code grid."""
  name: str                 # e.g. "bos", "text", "video_in", "video_out"
  start: int
  length: int
  kind: str                 # "special" | "text" | "visual" | "audio"
  token: int = -1           # the id of a special segment
  shape: tuple[int, ...] = ()   # code grid shape: visual (T', H', W'), audio (levels, T)

  @property
  def stop(self) -> int:
    return self.start + self.length


def latent_frames(num_frames: int) -> int:
  """MAGVIT-v2 causal grid: the first frame alone, then one latent frame per 4 frames."""
  if num_frames < 1 or (num_frames - 1) % 4:
    raise LayoutError(f"num_frames={num_frames} must be 1 + 4k.")
  return 1 + (num_frames - 1) // 4


def pixel_frames(num_latent_frames: int) -> int:
  return 1 + 4 * (num_latent_frames - 1)


def audio_frames(num_frames: int, fps: int = FPS) -> int:
  """SoundStream frames for the duration of `num_frames` video frames: floor(seconds x 50)
  (17 frames = 2.125 s -> 106; 41 frames = 5.125 s -> 256)."""
  return (num_frames * AUDIO_FRAMES_PER_SECOND) // fps


@dataclasses.dataclass(frozen=True)
class Layout:
  """A task's token sequence (paper Fig. 3): its segments in order, where the prefix ends, and
  the clip's shapes. `build` turns code grids into token rows, `extract` does the reverse."""
  task: Task
  vocab: Vocabulary
  segments: tuple[Segment, ...]
  prefix_length: int
  num_frames: int           # pixel frames of the whole clip (1 for an image)
  latent_shape: tuple[int, int, int]   # (T', H', W') of the whole clip
  audio_shape: tuple[int, int] | None  # (levels, T) of the whole clip's audio, if any

  @property
  def length(self) -> int:
    return self.segments[-1].stop

  @property
  def output_length(self) -> int:
    return self.length - self.prefix_length

  def segment(self, name: str) -> Segment:
    for s in self.segments:
      if s.name == name:
        return s
    raise LayoutError(f"{self.task.value}: no segment {name!r}; has "
                      f"{[s.name for s in self.segments]}.")

  def has(self, name: str) -> bool:
    return any(s.name == name for s in self.segments)

  @property
  def code_inputs(self) -> tuple[str, ...]:
    """Names of the code segments `build` needs."""
    return tuple(s.name for s in self.segments if s.kind in ("visual", "audio"))

  def text_slots(self) -> tuple[int, int]:
    """(start, length) of the reserved text positions; (0, 0) without text."""
    if not self.has("text"):
      return 0, 0
    s = self.segment("text")
    return s.start, s.length

  # -- building ---------------------------------------------------------------------------------
  def build(self, codes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tokenizer codes by segment name -> one training example:
    tokens int32 [L], loss_mask bool [L] (True at outputs), prefix_length int32 []."""
    missing = [n for n in self.code_inputs if n not in codes]
    extra = [n for n in codes if n not in self.code_inputs]
    if missing or extra:
      raise LayoutError(f"{self.task.value}: needs codes {list(self.code_inputs)}; missing "
                        f"{missing}, unexpected {extra}.")
    tokens = np.zeros((self.length,), np.int32)
    for s in self.segments:
      if s.kind == "special":
        tokens[s.start] = s.token
      elif s.kind == "text":
        tokens[s.start:s.stop] = Special.TEXT_SLOT
      else:
        grid = np.asarray(codes[s.name])
        if grid.shape != s.shape:
          raise LayoutError(f"{self.task.value}: {s.name} must have shape {s.shape}, got "
                            f"{grid.shape}.")
        ids = (self.vocab.visual_to_ids(grid).reshape(-1) if s.kind == "visual"
               else self.vocab.audio_to_ids(grid))
        tokens[s.start:s.stop] = ids
    loss_mask = np.arange(self.length) >= self.prefix_length
    return {"tokens": tokens, "loss_mask": loss_mask,
            "prefix_length": np.asarray(self.prefix_length, np.int32)}

  def prefix(self, codes: Mapping[str, np.ndarray]) -> np.ndarray:
    """The prefix ids for generation: like `build` but only input codes are needed."""
    inputs = {n: codes[n] for n in self.code_inputs if self.segment(n).start < self.prefix_length}
    dummy = {n: np.zeros(self.segment(n).shape, np.int32) for n in self.code_inputs
             if n not in inputs}
    return self.build({**inputs, **dummy})["tokens"][:self.prefix_length]

  # -- sampling constraints ---------------------------------------------------------------------
  def legal_ranges(self) -> tuple[np.ndarray, np.ndarray]:
    """Per position, the [lo, hi) ids that may be sampled there: int32 [L] each.

    Visual segments allow every visual id, audio segments only their RVQ level's range, special
    and text positions exactly their own id."""
    lo = np.zeros((self.length,), np.int32)
    hi = np.zeros((self.length,), np.int32)
    for s in self.segments:
      if s.kind == "visual":
        lo[s.start:s.stop], hi[s.start:s.stop] = self.vocab.visual_range()
      elif s.kind == "audio":
        per_level = s.shape[1]
        for level in range(s.shape[0]):
          a, b = s.start + level * per_level, s.start + (level + 1) * per_level
          lo[a:b], hi[a:b] = self.vocab.audio_range(level)
      else:
        token = Special.TEXT_SLOT if s.kind == "text" else s.token
        lo[s.start:s.stop], hi[s.start:s.stop] = token, token + 1
    return lo, hi

  def stop_tokens(self) -> tuple[int, ...]:
    """Ids after which a generated row is finished: `<eos>`, and the end token of the last output
    (`<eov_o>` or `<eoa_o>`; an `<eov_o>` followed by an audio output does not stop). Text-to-image
    has none: it stops at the layout's length."""
    if not self.has("eos"):
      return ()
    last = Special.EOA_O if self.has("eoa_o") else Special.EOV_O
    return (int(Special.EOS), int(last))

  # -- inversion --------------------------------------------------------------------------------
  def extract(self, tokens) -> dict[str, np.ndarray]:
    """Ids [..., L] (a built example or a generated sequence) -> code grids by segment name, plus
    `video` (the whole clip's visual codes [..., T', H', W']) and `audio` ([..., levels, T]) where
    the task has them; continuation tasks join context and continuation."""
    tokens = np.asarray(tokens)
    if tokens.shape[-1] != self.length:
      raise LayoutError(f"{self.task.value}: expected {self.length} ids, got {tokens.shape[-1]}.")
    batch = tokens.shape[:-1]
    out: dict[str, np.ndarray] = {}
    for s in self.segments:
      ids = tokens[..., s.start:s.stop]
      if s.kind == "special":
        if np.any(ids != s.token):
          raise LayoutError(f"{self.task.value}: position {s.start} must be "
                            f"{Special(s.token).name}, got {ids.reshape(-1)[0]}.")
      elif s.kind == "visual":
        out[s.name] = self.vocab.ids_to_visual(ids).reshape(batch + s.shape)
      elif s.kind == "audio":
        out[s.name] = self.vocab.ids_to_audio(ids)
    spec = _SPECS[self.task]
    if spec.video_output == "continuation":
      out["video"] = np.concatenate([out[VIDEO_IN], out[VIDEO_OUT]], axis=-3)
    elif spec.video_output is not None:
      out["video"] = out[VIDEO_OUT]
    if spec.audio_output == "continuation":
      out["audio"] = np.concatenate([out[AUDIO_IN], out[AUDIO_OUT]], axis=-1)
    elif spec.audio_output is not None:
      out["audio"] = out[AUDIO_OUT]
    return out


def make_layout(task: Task | str, *, vocab: Vocabulary = PAPER, resolution: str = "128x128",
                num_frames: int = 17, with_text: bool | None = None,
                text_length: int = TEXT_LENGTH, latent_hw: tuple[int, int] | None = None,
                context_frames: int | None = None, num_audio_frames: int | None = None,
                first_frame: bool = False) -> Layout:
  """The layout of `task` for a clip of `num_frames` frames at `resolution` (the paper's format
  names). `latent_hw` overrides the latent grid (default: resolution / 8, for reduced-size CPU
  runs); `context_frames` is the number of latent context frames of continuation tasks (default 1,
  2 for future prediction = the K600 protocol's 5 frames); `first_frame` adds the first frame to
  stylization; `with_text` defaults to whether the task requires text."""
  task = Task(task)
  spec = _SPECS[task]
  if resolution not in RESOLUTIONS:
    raise LayoutError(f"resolution {resolution!r}; known: {sorted(RESOLUTIONS)}.")
  if task == Task.TEXT_TO_IMAGE:
    if resolution != "128x128":
      raise LayoutError("text_to_image: images are tokenized at 128x128 (paper 4.1).")
    num_frames = 1
  elif (resolution, num_frames) not in FORMAT_TOKENS:
    raise LayoutError(f"{task.value}: num_frames={num_frames}; the paper's lengths are 17 and 41.")
  if with_text is None:
    with_text = spec.text == "required"
  if with_text and spec.text == "none":
    raise LayoutError(f"{task.value} takes no text.")
  if not with_text and spec.text == "required":
    raise LayoutError(f"{task.value} requires text.")
  if with_text and text_length < 1:
    raise LayoutError(f"text_length={text_length} must be >= 1.")
  if first_frame and task != Task.STYLIZATION:
    raise LayoutError(f"first_frame applies to stylization, not {task.value}.")

  h, w = RESOLUTIONS[resolution]
  lh, lw = latent_hw if latent_hw is not None else (h // 8, w // 8)
  lt = latent_frames(num_frames)
  if context_frames is None:
    context_frames = 2 if task == Task.FUTURE_PREDICTION else 1
  if (spec.video_output == "continuation") and not 1 <= context_frames < lt:
    raise LayoutError(f"{task.value}: context_frames={context_frames} must be in [1, {lt}).")
  levels = vocab.audio_levels
  n_audio = num_audio_frames if num_audio_frames is not None else audio_frames(num_frames)
  uses_audio = spec.audio_input is not None or spec.audio_output is not None
  audio_context = (pixel_frames(context_frames) * n_audio) // num_frames
  if uses_audio and spec.audio_input == "context" and not 1 <= audio_context < n_audio:
    raise LayoutError(f"{task.value}: {audio_context} context audio frames out of {n_audio}.")

  segments: list[Segment] = []

  def add(name, kind, length=1, token=-1, shape=()):
    start = segments[-1].stop if segments else 0
    segments.append(Segment(name, start, length, kind, int(token), tuple(shape)))

  def visual(name, shape):
    add(name, "visual", int(np.prod(shape)), shape=shape)

  add("bos", "special", token=Special.BOS)
  add("task", "special", token=spec.task_token)
  if with_text:
    add("bot_i", "special", token=Special.BOT_I)
    add("text", "text", text_length)
    add("eot_i", "special", token=Special.EOT_I)
  for kind in spec.visual_inputs:
    add("bov_i", "special", token=Special.BOV_I)
    visual(VIDEO_IN, (context_frames if kind == "context" else lt, lh, lw))
    add("eov_i", "special", token=Special.EOV_I)
    if kind == "flow" and first_frame:
      add("bov_i_first", "special", token=Special.BOV_I)
      visual(FIRST_FRAME_IN, (1, lh, lw))
      add("eov_i_first", "special", token=Special.EOV_I)
  if spec.audio_input is not None:
    t = audio_context if spec.audio_input == "context" else n_audio
    add("boa_i", "special", token=Special.BOA_I)
    add(AUDIO_IN, "audio", levels * t, shape=(levels, t))
    add("eoa_i", "special", token=Special.EOA_I)
  if spec.video_output is not None:
    if resolution == "128x224":
      add("res", "special", token=Special.RES)
    add("format", "special", token=FORMAT_TOKENS[("128x128", 17) if num_frames == 1
                                                 else (resolution, num_frames)])
    add("bov_o", "special", token=Special.BOV_O)
    prefix_length = segments[-1].stop
    out_t = {"full": lt, "image": 1, "continuation": lt - context_frames}[spec.video_output]
    visual(VIDEO_OUT, (out_t, lh, lw))
    if spec.video_output != "image":
      add("eov_o", "special", token=Special.EOV_O)
  if spec.audio_output is not None:
    add("boa_o", "special", token=Special.BOA_O)
    if spec.video_output is None:
      prefix_length = segments[-1].stop
    t = n_audio - audio_context if spec.audio_output == "continuation" else n_audio
    add(AUDIO_OUT, "audio", levels * t, shape=(levels, t))
    add("eoa_o", "special", token=Special.EOA_O)
  if task != Task.TEXT_TO_IMAGE:
    add("eos", "special", token=Special.EOS)
  return Layout(task, vocab, tuple(segments), prefix_length, num_frames, (lt, lh, lw),
                (levels, n_audio) if uses_audio else None)
