"""VideoPoet's task mixtures: Table 2 rows, the two-stage pretraining schedule, task adaptation.

    from vp_jax.tasks import videopoet_mixtures as vm
    out = vm.register_videopoet({"vid": "/data/tok/vid_128_17", "img": "/data/tok/img_128"},
                                vocab=PAPER, prefix="vp")
    out.mixtures   # {"vp_t2v": "registered", "vp_pretrain": "registered", ... or the reason not}

Rates (paper 5.1: "uniform sampling among the selected tasks"): a row is a list of columns of
Table 2; every column gets the same share. A column with several kinds (Painting = inpainting +
outpainting) splits its share equally between them, and a kind registered several times (formats,
datasets, the two stylization variants) splits its share equally among its seqio tasks.

| mixture | columns |
|---|---|
| `{p}_t2v` | T2V |
| `{p}_t2v_i` | T2I, T2V |
| `{p}_ssl` | Uncond, FP, Painting, AVCont |
| `{p}_no_t2i` | T2V, Uncond, FP, Painting, AVCont |
| `{p}_all` | T2I, T2V, Uncond, FP, Painting, AVCont |
| `{p}_pretrain` | schedule (paper 4.2): image (T2I) 90% / video (every other kind, uniform) |
|  | 10% for the first 25% of steps, then 10% / 90%; seqio mixtures `{p}_pretrain_stage0/1` |
| `{p}_adapt_t2v` | T2I, T2V (paper 5.1: the model fine-tuned for text-to-video evaluation) |
| `{p}_adapt_t2v_i2v` | T2V, I2V (paper 4.2: fine-tuning on a high-quality subset) |
| `{p}_adapt_v2a` | video-to-audio (paper 4.2, 5.1) |

The two-stage schedule cannot be a seqio Mixture (fixed rates): it is a `vp_jax.data.mixing`
schedule, applied per step by the AGD iterator (`vp_jax.data.agd`). Unconditional image generation
(listed in 5.1) has no layout in vp_jax.sequence.layout and is left out. A mixture whose columns
have no registered task is not registered; `Registration.mixtures` says why.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from vp_jax.data.mixing import RateSchedule, Stage, is_registered, register_schedule
from vp_jax.sequence.vocab import Vocabulary
from vp_jax.tasks.videopoet import IMAGE_KINDS, KINDS, Registered, register_tasks

PAINTING = ("inpainting", "outpainting")
ROWS: dict[str, tuple[tuple[str, ...], ...]] = {
    "t2v": (("text_to_video",),),
    "t2v_i": (("text_to_image",), ("text_to_video",)),
    "ssl": (("unconditional_video",), ("future_prediction",), PAINTING,
            ("audio_video_continuation",)),
    "no_t2i": (("text_to_video",), ("unconditional_video",), ("future_prediction",), PAINTING,
               ("audio_video_continuation",)),
    "all": (("text_to_image",), ("text_to_video",), ("unconditional_video",),
            ("future_prediction",), PAINTING, ("audio_video_continuation",)),
    "adapt_t2v": (("text_to_image",), ("text_to_video",)),
    "adapt_t2v_i2v": (("text_to_video",), ("image_to_video",)),
    "adapt_v2a": (("video_to_audio",),),
}
VIDEO_KINDS = tuple(k for k in KINDS if k not in IMAGE_KINDS)
IMAGE_FIRST = ((0.0, 0.9), (0.25, 0.1))   # (start fraction, image share) of the pretraining stages


class MissingTasks(ValueError):
  """A mixture needs a task kind that no registered dataset provides."""


def column_rates(columns: Sequence[Sequence[str]], regs: Sequence[Registered],
                 total: float = 1.0) -> dict[str, float]:
  """seqio task name -> rate: `total` split equally among columns, then kinds, then tasks."""
  rates: dict[str, float] = {}
  for column in columns:
    for kind in column:
      names = [n for r in regs for n in r.tasks.get(kind, [])]
      if not names:
        reasons = {r.prefix: r.skipped.get(kind, "not requested") for r in regs}
        raise MissingTasks(f"no task registered for {kind!r} (per dataset: {reasons}).")
      for n in names:
        rates[n] = rates.get(n, 0.0) + total / len(columns) / len(column) / len(names)
  return rates


def pretraining_schedule(regs: Sequence[Registered],
                         stages: Sequence[tuple[float, float]] = IMAGE_FIRST) -> RateSchedule:
  """Image (text-to-image) vs video (every other kind present, uniform) shares per stage."""
  video_columns = [(k,) for k in VIDEO_KINDS if any(r.tasks.get(k) for r in regs)]
  if not video_columns:
    raise MissingTasks("pretraining needs video tasks; none registered.")
  out = []
  for start, image_share in stages:
    rates = column_rates([("text_to_image",)], regs, image_share)
    rates.update(column_rates(video_columns, regs, 1.0 - image_share))
    out.append(Stage(start, rates))
  return RateSchedule(tuple(out))


@dataclasses.dataclass
class Registration:
  datasets: dict[str, Registered]
  mixtures: dict[str, str]          # mixture name -> "registered" or why not

  def registered(self) -> list[str]:
    return [n for n, s in self.mixtures.items() if s == "registered"]


def register_mixtures(regs: Sequence[Registered], *, prefix: str = "vp",
                      overwrite: bool = False) -> dict[str, str]:
  """Registers the mixtures of the table above over the tasks of `regs`. Without `overwrite`, a
  name already taken raises before anything is registered, so a failed call leaves no half set."""
  # name -> how to build its schedule (MissingTasks when `regs` lack a task it needs)
  one_stage = lambda columns: RateSchedule((Stage(0.0, column_rates(columns, regs)),))
  builders = {f"{prefix}_{row}": lambda c=columns: one_stage(c) for row, columns in ROWS.items()}
  builders[f"{prefix}_pretrain"] = lambda: pretraining_schedule(regs)
  if not overwrite:
    taken = [n for n in builders if is_registered(n)]
    if taken:
      raise ValueError(f"register_mixtures: {', '.join(map(repr, taken))} already registered "
                       f"(pass overwrite=True to replace them); nothing was registered.")
  status: dict[str, str] = {}
  for name, build in builders.items():
    try:
      register_schedule(name, build(), overwrite=overwrite)
      status[name] = "registered"
    except MissingTasks as e:
      status[name] = str(e)
  return status


def register_videopoet(data_dirs: Mapping[str, str | Mapping[str, str]], *, vocab: Vocabulary,
                       prefix: str = "vp", overwrite: bool = False, **task_kwargs
                       ) -> Registration:
  """Tasks `{prefix}_{dataset}_{kind}_{format}` for each tokenized dataset, then the mixtures
  `{prefix}_{row}` over all of them."""
  regs = {ds: register_tasks(path, vocab=vocab, prefix=f"{prefix}_{ds}", overwrite=overwrite,
                             **task_kwargs) for ds, path in data_dirs.items()}
  return Registration(regs, register_mixtures(list(regs.values()), prefix=prefix,
                                              overwrite=overwrite))
