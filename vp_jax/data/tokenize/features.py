"""Per-clip features of the tokenized data: what is computed from each example, and how it is stored.

`encode_batch` runs the tokenizers (APIs of docs/interfaces.md) on a batch of normalized examples and
returns one dict of numpy arrays per example; `to_tf_example` / `feature_spec` define the on-disk
`tf.train.Example` layout that `vp_jax.data.tokenized.read_tokenized` parses back. The full list with
shapes is docs/data_format.md.
"""
from __future__ import annotations

import dataclasses
import io
import json
from typing import Any, Callable, Sequence

import ml_dtypes
import numpy as np
from PIL import Image

from vp_jax.data import conditions
from vp_jax.data.synthetic.dataset import FLAT_LABELS

TEXT_LEN = 64
AUDIO_LEVELS = 4
FORMAT_VERSION = 1
MISSING_AUDIO_CODE = -1  # audio_tokens of a clip without audio (has_audio = 0)
_STR_LABELS = ("shape", "colour", "size", "direction", "speed", "rotation", "background",
               "pattern", "camera")
_INT_LABELS = ("bounces", "num_objects")
assert set(_STR_LABELS + _INT_LABELS) == set(FLAT_LABELS)


@dataclasses.dataclass
class Tokenizers:
  """The encoders the job runs. `audio`/`text` may be None to leave those features out."""
  video: Any
  audio: Any = None
  text: Any = None
  text_cache: Any = None  # optional vp_jax.text EmbeddingCache (get_or_compute(texts, enc))


# Storage dtypes of `text_embeddings` (the manifest's config records which one a dataset used).
TEXT_DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
               "float32": np.dtype(np.float32)}


def text_storage_dtype(manifest: dict[str, Any]) -> str:
  """The dtype a dataset's text embeddings were written in (float16 for manifests that predate
  the setting, which always wrote float16)."""
  name = manifest.get("config", {}).get("text_dtype", "float16")
  if name not in TEXT_DTYPES:
    raise ValueError(f"manifest config text_dtype={name!r}; this reader knows "
                     f"{sorted(TEXT_DTYPES)}.")
  return name


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
  shard_size: int = 64                 # examples per output shard
  batch_size: int = 8                  # examples per tokenizer call (last batch is filled up by
                                       # repeating its last example; the extra rows are dropped)
  masks: tuple[str, ...] = conditions.MASKS   # COMMIT condition tokens to write
  box_fraction: float = 0.5            # central box: this fraction of H and of W
  stylization: bool | None = None      # None: on iff the source has flow+depth (or an estimator)
  flow_max: float = conditions.FLOW_MAX
  text_dtype: str = "float16"          # how text embeddings are stored (TEXT_DTYPES)

  def __post_init__(self):
    if self.text_dtype not in TEXT_DTYPES:
      raise ValueError(f"TokenizeConfig.text_dtype={self.text_dtype!r}; use one of "
                       f"{sorted(TEXT_DTYPES)}.")

  def output_affecting(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d.pop("batch_size")  # batching does not change the bytes written
    return d


def describe_component(obj: Any) -> dict[str, Any] | None:
  """Checkpoint / version record of a tokenizer or encoder (its `describe()` if it has one)."""
  if obj is None:
    return None
  if hasattr(obj, "describe"):
    return dict(obj.describe())
  out: dict[str, Any] = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
  for attr in ("checkpoint", "checkpoint_dir", "step", "version", "model_id"):
    if hasattr(obj, attr):
      out[attr] = str(getattr(obj, attr))
  return out


def _png(frame: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="PNG", optimize=False, compress_level=6)
  return buf.getvalue()


def _fill(batch: np.ndarray, size: int) -> np.ndarray:
  """Repeats the last row up to `size` rows (fixed tokenizer batch shapes, no recompiles)."""
  if batch.shape[0] >= size:
    return batch
  reps = np.repeat(batch[-1:], size - batch.shape[0], axis=0)
  return np.concatenate([batch, reps], axis=0)


def _ids(x, n: int) -> np.ndarray:
  return np.asarray(x)[:n].astype(np.int32)


def encode_batch(examples: Sequence[dict[str, Any]], tok: Tokenizers, config: TokenizeConfig, *,
                 stylization: bool,
                 structure_estimator: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
                 | None = None) -> list[dict[str, Any]]:
  """Tokenizes examples of one shape -> per-example dicts of numpy features."""
  n = len(examples)
  shapes = {np.shape(e["frames"]) for e in examples}   # checked before stacking, which would fail
  if len(shapes) != 1:                                  # with numpy's message, naming no example
    raise ValueError(f"examples {[e['id'] for e in examples]} have different frame shapes "
                     f"{sorted(shapes)}; a tokenized dataset has one (T, H, W).")
  frames = np.stack([np.asarray(e["frames"], np.uint8) for e in examples])  # [n, T, H, W, 3]
  bsz = config.batch_size
  _, t, h, w, _ = frames.shape
  filled = _fill(frames, bsz)
  out: list[dict[str, Any]] = [dict() for _ in range(n)]
  video = _ids(tok.video.encode(filled), n)                       # [n, T', H', W']
  is_video = t > 1
  first = _ids(tok.video.encode(filled[:, :1]), n) if is_video else video[:, :1]
  cond = {}
  for kind in (config.masks if is_video else ()):
    visible = conditions.visible_mask(kind, t, h, w, config.box_fraction)
    visible = np.broadcast_to(visible, (bsz, t, h, w))
    cond[kind] = _ids(tok.video.commit_condition(filled, visible), n)   # target = `video`
  style = None
  if stylization and is_video:
    structure = []
    for e in examples:
      if "flow" in e and "depth" in e:
        flow, depth = e["flow"], e["depth"]
      elif structure_estimator is not None:
        flow, depth = structure_estimator(e["frames"])
      else:
        raise ValueError(f"{e['id']}: stylization needs optical flow and depth; the source has "
                         "none (pass a structure estimator or disable stylization).")
      structure.append(conditions.stylization_condition(flow, depth, flow_max=config.flow_max))
    style = _ids(tok.video.encode(_fill(np.stack(structure), bsz)), n)
  audio = None
  with_audio = [i for i, e in enumerate(examples) if e.get("has_audio")]
  if tok.audio is not None and is_video and with_audio:
    waves = [np.asarray(examples[i]["audio"], np.float32) for i in with_audio]
    lengths = {wv.size for wv in waves}
    if len(lengths) != 1:
      raise ValueError(f"audio lengths differ within a batch: {sorted(lengths)} samples.")
    codes = _ids(tok.audio.encode(_fill(np.stack(waves), bsz)), len(with_audio))  # [m, 4, Ta]
    audio = dict(zip(with_audio, codes))
  text = None
  if tok.text is not None:
    captions = [e["caption"] for e in examples]
    padded = captions + [captions[-1]] * (bsz - n)
    emb = (tok.text_cache.get_or_compute(padded, tok.text) if tok.text_cache is not None
           else tok.text.encode(padded))
    text = (np.asarray(emb.embeddings)[:n], np.asarray(emb.mask)[:n],
            np.asarray(emb.num_truncated)[:n])
  for i, e in enumerate(examples):
    o = out[i]
    o["id"] = e["id"]
    o["kind"] = "video" if is_video else "image"
    o["video_tokens"] = video[i]
    o["first_frame_tokens"] = first[i]
    o["first_frame_png"] = _png(frames[i, 0])
    for kind, ids in cond.items():
      o[f"commit_{kind}_tokens"] = ids[i]
    if style is not None:
      o["stylization_tokens"] = style[i]
    if audio is not None or (tok.audio is not None and is_video):
      o["has_audio"] = i in (audio or {})
      o["audio_tokens"] = audio[i] if o["has_audio"] else None
    if text is not None:
      o["text_embeddings"] = text[0][i].astype(TEXT_DTYPES[config.text_dtype])
      o["text_mask"] = text[1][i].astype(bool)
      o["text_num_truncated"] = int(text[2][i])
    o["caption"] = e["caption"]
    o["labels"] = e.get("labels") or {}
  return out


# --------------------------------------------------------------------------------------------------
# On-disk layout.

def _int64(values) -> Any:
  import tensorflow as tf
  return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values).ravel().tolist()))


def _bytes(value: bytes | str) -> Any:
  import tensorflow as tf
  if isinstance(value, str):
    value = value.encode("utf-8")
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def to_tf_example(f: dict[str, Any]) -> bytes:
  """Serializes one feature dict (deterministically: same features -> same bytes)."""
  import tensorflow as tf
  feats = {"id": _bytes(f["id"]), "kind": _bytes(f["kind"]), "caption": _bytes(f["caption"]),
           "video_tokens": _int64(f["video_tokens"]),
           "first_frame_tokens": _int64(f["first_frame_tokens"]),
           "first_frame_png": _bytes(f["first_frame_png"]),
           "labels_json": _bytes(json.dumps(f["labels"], sort_keys=True))}
  for key in list(f):
    if key.startswith("commit_") or key == "stylization_tokens":
      feats[key] = _int64(f[key])
  if "has_audio" in f:
    feats["has_audio"] = _int64([int(f["has_audio"])])
    if f["audio_tokens"] is not None:  # absent for clips without audio (read back as -1s)
      feats["audio_tokens"] = _int64(f["audio_tokens"])
  if "text_embeddings" in f:
    feats["text_embeddings"] = _bytes(np.ascontiguousarray(f["text_embeddings"]).tobytes())
    feats["text_mask"] = _int64(f["text_mask"].astype(np.int64))
    feats["text_num_truncated"] = _int64([f["text_num_truncated"]])
  if f["labels"]:
    from vp_jax.data.synthetic.dataset import flat_labels
    flat = flat_labels(f["labels"])
    for k in _STR_LABELS:
      feats[f"label_{k}"] = _bytes(str(flat[k]))
    for k in _INT_LABELS:
      feats[f"label_{k}"] = _int64([int(flat[k])])
  example = tf.train.Example(features=tf.train.Features(feature=feats))
  return example.SerializeToString(deterministic=True)


def shapes_of(f: dict[str, Any]) -> dict[str, list[int]]:
  """Array shapes of one example's features (recorded in the manifest)."""
  out = {"video_tokens": list(f["video_tokens"].shape),
         "first_frame_tokens": list(f["first_frame_tokens"].shape)}
  for key, value in f.items():
    if key.startswith("commit_") or key == "stylization_tokens":
      out[key] = list(value.shape)
  if f.get("audio_tokens") is not None:
    out["audio_tokens"] = list(f["audio_tokens"].shape)
  if "text_embeddings" in f:
    out["text_embeddings"] = list(f["text_embeddings"].shape)
    out["text_mask"] = list(f["text_mask"].shape)
  return out


def feature_spec(manifest: dict[str, Any]) -> dict[str, Any]:
  """tf.io parsing spec for the features a manifest says were written."""
  import tensorflow as tf
  shapes = manifest["shapes"]
  spec: dict[str, Any] = {
      "id": tf.io.FixedLenFeature([], tf.string), "kind": tf.io.FixedLenFeature([], tf.string),
      "caption": tf.io.FixedLenFeature([], tf.string),
      "first_frame_png": tf.io.FixedLenFeature([], tf.string),
      "labels_json": tf.io.FixedLenFeature([], tf.string)}
  for key, shape in shapes.items():
    if key == "audio_tokens":
      size = int(np.prod(shape))
      spec[key] = tf.io.FixedLenFeature([size], tf.int64, default_value=[MISSING_AUDIO_CODE] * size)
    elif key.endswith("_tokens") or key == "text_mask":
      spec[key] = tf.io.FixedLenFeature([int(np.prod(shape))], tf.int64)
  if "has_audio" in manifest["features"]:  # written whenever an audio tokenizer ran
    spec["has_audio"] = tf.io.FixedLenFeature([1], tf.int64)
  if "text_embeddings" in shapes:
    spec["text_embeddings"] = tf.io.FixedLenFeature([], tf.string)
    spec["text_num_truncated"] = tf.io.FixedLenFeature([1], tf.int64)
  if manifest.get("has_labels"):
    for k in _STR_LABELS:
      spec[f"label_{k}"] = tf.io.FixedLenFeature([], tf.string)
    for k in _INT_LABELS:
      spec[f"label_{k}"] = tf.io.FixedLenFeature([1], tf.int64)
  return spec
