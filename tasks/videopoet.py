"""seqio Tasks of the VideoPoet pretraining tasks over pretokenized data (paper 4.1, 5.1).

    from vp_jax.tasks import videopoet
    reg = videopoet.register_tasks("/data/tok/syn_32_17", vocab=SMALL_VOCAB, prefix="vp_syn")
    reg.tasks   # {"text_to_video": ["vp_syn_text_to_video_128x128_17"], "inpainting": [...], ...}

`register_tasks` reads a tokenized dataset's manifest (`vp_jax.data.tokenized`) and registers one
seqio Task per task kind the data supports, at the data's resolution and length (register each
tokenized directory, e.g. 17- and 41-frame, 128x128 and 128x224, and image data, with its own
prefix). Every preprocessor turns a tokenized clip into the LM example of the task's `Layout`
(`vp_jax.sequence.layout`, built by `vp_jax.data.lm_examples.tf_build`):
`tokens` int32 [L], `loss_mask` bool [L], `prefix_length` int32 [] and, for data with text,
`text_embeddings` float32 [64, D] and `text_mask` bool [64] (every task of a dataset with text
embeddings has them; unconditional video gets an all-False mask). Every example of one task has
the same length L, which is what alternating gradient descent (vp_jax.data.agd) groups by.

Where the codes come from (features of docs/data_format.md):

    kind                             inputs (besides text)               output
    unconditional_video, t2v         -                                   video_tokens
    text_to_image (image data)       -                                   video_tokens [1, H', W']
    future_prediction                video_tokens[:c], c drawn per       video_tokens[c:]
                                     example (`future_context_frames`)
    image_to_video                   video_tokens[:1] (the first frame:  video_tokens[1:]
                                     the tokenizer is causal)
    inpainting / outpainting         commit_{inpaint,outpaint}_central_  video_tokens
                                     tokens (COMMIT: the masked video)
    stylization (+ _first_frame)     stylization_tokens [+ first frame]  video_tokens
    audio_to_video                   audio_tokens                        video_tokens
    video_to_audio                   video_tokens                        audio_tokens
    audio_video_continuation         video_tokens[:1] + its audio        the rest of both

Audio tasks use only clips with `has_audio`. Tasks whose text is optional in the paper get text when
the data has text embeddings (an empty caption has an all-False `text_mask`, i.e. no text).
Condition dropout for classifier-free guidance is NOT done here: the model drops each example's
text condition with probability `PrefixLMConfig.cond_dropout` inside its loss (same input CFG uses
at sampling), so tasks always pass the text they have.

A new task without editing the library: call `register_layout_task(name, data_dir, layouts,
codes_fn, ...)` from your own module (README, "Adding a seqio task without editing the library").
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from vp_jax.data.lm_examples import tf_build, tf_build_choice
from vp_jax.data.tokenized import load_manifest, read_tokenized
from vp_jax.sequence import layout as L
from vp_jax.sequence.vocab import Vocabulary

Task = L.Task
CodesFn = Callable[[L.Layout, Mapping[str, tf.Tensor]], Mapping[str, tf.Tensor]]

# Task kinds in the order of paper 5.1; "stylization" covers both of its variants (with and without
# the first frame), each a seqio Task of its own.
KINDS = ("text_to_image", "text_to_video", "image_to_video", "outpainting", "inpainting",
         "stylization", "future_prediction", "video_to_audio", "audio_to_video",
         "unconditional_video", "audio_video_continuation")
IMAGE_KINDS = ("text_to_image",)


def _splits(data_dir: str | Mapping[str, str]) -> dict[str, str]:
  if isinstance(data_dir, str):
    return {"train": data_dir}
  if not data_dir:
    raise ValueError("data_dir: empty mapping of split -> tokenized directory.")
  return dict(data_dir)


def _features(layouts: Sequence[L.Layout], text: bool) -> dict[str, seqio.Feature]:
  vocab = layouts[0].vocab
  out = {"tokens": seqio.Feature(seqio.PassThroughVocabulary(vocab.size), add_eos=False,
                                 dtype=tf.int32),
         "loss_mask": seqio.ContinuousFeature(dtype=tf.bool, rank=1),
         "prefix_length": seqio.ContinuousFeature(dtype=tf.int32, rank=0)}
  if text:
    out["text_embeddings"] = seqio.ContinuousFeature(dtype=tf.float32, rank=2)
    out["text_mask"] = seqio.ContinuousFeature(dtype=tf.bool, rank=1)
  return out


class TokenizedSource(seqio.FunctionDataSource):
  """The clips of a tokenized dataset ({split: dir}) as a seqio source. Input processes read
  disjoint sets of shard files when there are at least as many files as processes (seqio then
  passes the ShardInfo here); otherwise seqio shards the examples."""

  def __init__(self, splits: Mapping[str, str]):
    self._dirs = dict(splits)

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
      return read_tokenized(self._dirs[split], shuffle_files=shuffle_files, seed=seed)

    super().__init__(dataset_fn, splits=tuple(self._dirs))

  def list_shards(self, split: str) -> list[str]:
    return list(load_manifest(self._dirs[split])["shards"])

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: int | None = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs   # seqio repeats and caches above the source
    index, count = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
    return read_tokenized(self._dirs[split], shuffle_files=shuffle, seed=seed,
                          shard_index=index, num_shards=count)


def register_layout_task(name: str, data_dir: str | Mapping[str, str],
                         layouts: L.Layout | Sequence[L.Layout], codes_fn: CodesFn, *,
                         filter_fn: Callable[[Mapping[str, tf.Tensor]], tf.Tensor] | None = None,
                         text_features: bool | None = None,
                         overwrite: bool = False) -> seqio.Task:
  """Registers seqio Task `name`: clips of a tokenized dataset -> LM examples of `layouts`.

  `codes_fn(layout, clip)` maps a tokenized clip (dict of tf tensors, docs/data_format.md) to the
  layout's code segments (`layout.code_inputs`). With several layouts (equal lengths), one is drawn
  uniformly per example (stateless, from the seed seqio is given). `filter_fn(clip)` -> bool
  tensor keeps a subset of clips. `data_dir` is a directory (split "train") or {split: dir}.
  `text_features` (default: whether the layouts have text slots) adds `text_embeddings` and
  `text_mask`; a layout without text slots then gets zeros and an all-False mask, so that tasks
  with and without text can share a seqio Mixture (which requires equal output features)."""
  layouts = [layouts] if isinstance(layouts, L.Layout) else list(layouts)
  if not layouts:
    raise ValueError(f"{name}: no layouts.")
  if len({(lay.length, lay.has("text")) for lay in layouts}) != 1:
    raise ValueError(f"{name}: layouts must share length and text slots, got "
                     f"{[(lay.length, lay.has('text')) for lay in layouts]}.")
  splits = _splits(data_dir)
  for split, path in splits.items():
    load_manifest(path)   # fails now, naming the directory, if it is not a finished dataset
  with_text = layouts[0].has("text")
  if text_features is None:
    text_features = with_text
  if with_text and not text_features:
    raise ValueError(f"{name}: the layout has text slots; text_features must be True.")

  def to_example(clip, seed=None):
    if len(layouts) == 1:
      out = tf_build(layouts[0], codes_fn(layouts[0], clip))
    else:
      index = tf.random.stateless_uniform([], seed, 0, len(layouts), dtype=tf.int32)
      out = tf_build_choice(layouts, index, lambda lay: codes_fn(lay, clip))
    if with_text:
      out["text_embeddings"] = clip["text_embeddings"]
      out["text_mask"] = clip["text_mask"]
    elif text_features:          # no text slots: nothing to attend to
      out["text_embeddings"] = tf.zeros_like(clip["text_embeddings"])
      out["text_mask"] = tf.zeros_like(clip["text_mask"])
    return out

  def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
    if filter_fn is not None:
      ds = ds.filter(filter_fn)
    if len(layouts) == 1:
      return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return seqio.map_over_dataset(num_seeds=1)(to_example)(ds)

  if overwrite:
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name, source=TokenizedSource(splits),
      preprocessors=[preprocess], output_features=_features(layouts, text_features))


# -- the VideoPoet tasks ---------------------------------------------------------------------
def videopoet_codes(layout: L.Layout, clip: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """The code segments of a VideoPoet task's layout from a tokenized clip (table above)."""
  task, video = layout.task, clip["video_tokens"]
  if task in (Task.UNCONDITIONAL_VIDEO, Task.TEXT_TO_VIDEO, Task.TEXT_TO_IMAGE):
    return {L.VIDEO_OUT: video}
  if task in (Task.FUTURE_PREDICTION, Task.IMAGE_TO_VIDEO):
    c = layout.segment(L.VIDEO_IN).shape[0]
    return {L.VIDEO_IN: video[:c], L.VIDEO_OUT: video[c:]}
  if task in (Task.INPAINTING, Task.OUTPAINTING):
    key = ("commit_inpaint_central_tokens" if task == Task.INPAINTING
           else "commit_outpaint_central_tokens")
    return {L.VIDEO_IN: clip[key], L.VIDEO_OUT: video}
  if task == Task.STYLIZATION:
    codes = {L.VIDEO_IN: clip["stylization_tokens"], L.VIDEO_OUT: video}
    if layout.has(L.FIRST_FRAME_IN):
      codes[L.FIRST_FRAME_IN] = clip["first_frame_tokens"]
    return codes
  audio = clip["audio_tokens"]                                          # [levels, Ta]
  if task == Task.AUDIO_TO_VIDEO:
    return {L.AUDIO_IN: audio, L.VIDEO_OUT: video}
  if task == Task.VIDEO_TO_AUDIO:
    return {L.VIDEO_IN: video, L.AUDIO_OUT: audio}
  if task == Task.AUDIO_VIDEO_CONTINUATION:
    c = layout.segment(L.VIDEO_IN).shape[0]
    ac = layout.segment(L.AUDIO_IN).shape[1]
    return {L.VIDEO_IN: video[:c], L.AUDIO_IN: audio[:, :ac], L.VIDEO_OUT: video[c:],
            L.AUDIO_OUT: audio[:, ac:]}
  raise ValueError(f"videopoet_codes: no recipe for task {task.value}.")


def _has_audio(clip):
  return clip["has_audio"]


@dataclasses.dataclass
class Registered:
  """What `register_tasks` registered for one dataset: task kind -> seqio task names, the layout
  of each task (its first one for tasks with a choice), and kinds skipped with the reason."""
  prefix: str
  is_image: bool
  tasks: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  layouts: dict[str, L.Layout] = dataclasses.field(default_factory=dict)
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)

  def names(self, kinds: Sequence[str] | None = None) -> list[str]:
    return [n for k in (kinds or KINDS) for n in self.tasks.get(k, [])]


def register_tasks(data_dir: str | Mapping[str, str], *, vocab: Vocabulary, prefix: str,
                   future_context_frames: Sequence[int] | None = None,
                   kinds: Sequence[str] = KINDS, overwrite: bool = False) -> Registered:
  """Registers `{prefix}_{kind}_{res}_{frames}` for every kind in `kinds` the dataset supports.

  `vocab` is the LM config's vocabulary (the CPU presets use 2^10 visual codes; codes outside it
  fail in the pipeline naming the segment). Image data (one latent frame) gives text_to_image;
  video data the rest, where the features exist (audio tasks need clips with audio, stylization
  the stylization tokens, optional-text tasks use text when the data has it).
  `future_context_frames`: latent context lengths drawn per example (default all of 1..T'-1: a
  variable-length context; every choice has the same sequence length)."""
  unknown = [k for k in kinds if k not in KINDS]
  if unknown:
    raise ValueError(f"register_tasks: unknown kinds {unknown}; known: {list(KINDS)}.")
  splits = _splits(data_dir)
  manifest = load_manifest(next(iter(splits.values())))
  shapes, feats = manifest["shapes"], set(manifest["features"])
  if "video_tokens" not in shapes:
    raise ValueError(f"{data_dir}: the manifest has no video_tokens (shapes {sorted(shapes)}).")
  lt, lh, lw = shapes["video_tokens"]
  is_image = lt == 1
  has_text = "text_embeddings" in shapes
  has_audio = "audio_tokens" in shapes and manifest.get("num_with_audio", 0) > 0
  resolution = "128x224" if lh > lw else "128x128"
  frames = L.pixel_frames(lt)
  common = dict(vocab=vocab, resolution=resolution, latent_hw=(lh, lw))
  if has_text:
    common["text_length"] = shapes["text_embeddings"][0]
  if has_audio:
    common["num_audio_frames"] = shapes["audio_tokens"][1]
  reg = Registered(prefix=prefix, is_image=is_image)
  fmt = f"{resolution}_{frames}"

  def add(kind, name, layouts, filter_fn=None):
    register_layout_task(name, splits, layouts, videopoet_codes, filter_fn=filter_fn,
                         text_features=has_text, overwrite=overwrite)
    reg.tasks.setdefault(kind, []).append(name)
    reg.layouts[name] = layouts[0] if isinstance(layouts, list) else layouts

  for kind in kinds:
    task = Task(kind)
    name = f"{prefix}_{kind}_{fmt}"
    if (kind in IMAGE_KINDS) != is_image:
      reg.skipped[kind] = "needs image data" if kind in IMAGE_KINDS else "needs video data"
      continue
    spec_text = L._SPECS[task].text
    if spec_text == "required" and not has_text:
      reg.skipped[kind] = "needs text embeddings"
      continue
    text = dict(with_text=has_text and spec_text != "none")
    if kind == "text_to_image":
      add(kind, f"{prefix}_{kind}", L.make_layout(task, **common, **text))
    elif kind == "future_prediction":
      contexts = tuple(future_context_frames or range(1, lt))
      add(kind, name, [L.make_layout(task, num_frames=frames, context_frames=c, **common, **text)
                       for c in contexts])
    elif kind in ("inpainting", "outpainting"):
      key = f"commit_{'inpaint' if kind == 'inpainting' else 'outpaint'}_central_tokens"
      if key not in shapes:
        reg.skipped[kind] = f"needs {key}"
        continue
      add(kind, name, L.make_layout(task, num_frames=frames, **common, **text))
    elif kind == "stylization":
      if "stylization_tokens" not in shapes:
        reg.skipped[kind] = "needs stylization_tokens (flow + depth)"
        continue
      add(kind, name, L.make_layout(task, num_frames=frames, **common, **text))
      add(kind, f"{prefix}_{kind}_first_frame_{fmt}",
          L.make_layout(task, num_frames=frames, first_frame=True, **common, **text))
    elif kind in ("audio_to_video", "video_to_audio", "audio_video_continuation"):
      if not has_audio or "has_audio" not in feats:
        reg.skipped[kind] = "needs clips with audio"
        continue
      add(kind, name, L.make_layout(task, num_frames=frames, **common, **text),
          filter_fn=_has_audio)
    else:
      add(kind, name, L.make_layout(task, num_frames=frames, **common, **text))
  return reg
