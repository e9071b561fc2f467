"""`run_demo(workdir, config)`: the whole VideoPoet pipeline on the built-in dataset, on one CPU.

Stages, each in its own directory under `workdir` and each finished by a `summary.json`:

  data        a few real clips written as mp4 (+ audio) / gif, and what the dataset is
  video_tok   MAGVIT-v2: image pretraining -> inflation -> video training (shared Trainer)
  audio_tok   SoundStream on the dataset's soundtracks (shared Trainer)
  tokenize    the offline tokenization job over clips and images (video, audio, demo T5 text)
  lm          the prefix LM on the demo mixture with alternating gradient descent
  generate    text-to-video, image-to-video, future prediction (video continuation) and
              video-to-audio samples -> mp4 / gif / contact sheet; the detector's quality figure
  report      report.md + report.json (losses, tokenizer PSNR, token counts, quality, wall time)

A second run skips every stage whose summary exists (training stages also resume from their last
checkpoint when a run was interrupted); `force` names stages to redo (with all that follows).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Callable, Sequence

import jax

from vp_jax.demo import report as report_lib
from vp_jax.demo.config import DemoConfig
from vp_jax.train.optim import OptimizerConfig
from vp_jax.train.trainer import TrainerConfig

STAGES = ("data", "video_tok", "audio_tok", "tokenize", "lm", "generate", "report")
TASK_PREFIX = "demo"


def _say(msg: str) -> None:
  print(f"[demo] {msg}", flush=True)


def _trainer(steps: int, lr: float, seed: int, *, groups: Sequence[str] = ("generator",),
             warmup: int | None = None, **kw) -> TrainerConfig:
  opt = OptimizerConfig(learning_rate=lr, warmup_steps=min(warmup or steps // 10, steps - 1),
                        schedule="cosine", end_learning_rate_ratio=0.1, clip_norm=1.0)
  return TrainerConfig(train_steps=steps, seed=seed, log_every=max(steps // 10, 1),
                       save_every=steps, eval_every=0, optimizers={g: opt for g in groups}, **kw)


def _losses(result) -> dict:
  steps = sorted(result.losses)
  if not steps:
    return {}
  return {"first_step": steps[0], "first_loss": float(result.losses[steps[0]]),
          "last_step": steps[-1], "last_loss": float(result.losses[steps[-1]])}


# -- stages -----------------------------------------------------------------------------------------
def stage_data(cfg: DemoConfig, d: str, ctx: dict) -> dict:
  from vp_jax.data.synthetic.dataset import SyntheticVideos
  from vp_jax.demo import media
  data = SyntheticVideos(cfg.videos, "validation")
  clips = []
  for i in range(min(cfg.num_samples, len(data))):
    ex = data[i]
    files = media.write_clip(os.path.join(d, f"real_{i}"), ex["frames"], cfg.videos.fps,
                             audio=ex["audio"], scale=cfg.display_scale)
    clips.append({"files": files, "caption": ex["caption"]})
  return {"videos": _describe(cfg.videos), "images": _describe(cfg.images), "examples": clips}


def _describe(c) -> dict:
  return {"resolution": list(c.hw), "num_frames": c.num_frames, "train": c.num_examples,
          "seed": c.seed}


def stage_video_tok(cfg: DemoConfig, d: str, ctx: dict) -> dict:
  from vp_jax.models.magvit.train import train_video_tokenizer
  image_dir, video_dir = os.path.join(d, "image"), os.path.join(d, "video")
  image_cfg = dataclasses.replace(cfg.video_tokenizer, temporal_kernel=1)
  common = dict(groups=("generator", "discriminator"))
  _say(f"video tokenizer: image pretraining, {cfg.image_steps} steps of {cfg.image_batch} frames")
  img = train_video_tokenizer(model_dir=image_dir, model=image_cfg, batch_size=cfg.image_batch,
                              trainer=_trainer(cfg.image_steps, cfg.image_lr, cfg.seed, **common),
                              dataset=cfg.images)
  _say(f"video tokenizer: inflated, video training, {cfg.video_steps} steps of {cfg.video_batch} "
       f"clips")
  vid = train_video_tokenizer(model_dir=video_dir, model=cfg.video_tokenizer,
                              batch_size=cfg.video_batch, init_from=image_dir,
                              trainer=_trainer(cfg.video_steps, cfg.video_lr, cfg.seed, **common),
                              dataset=cfg.videos)
  return {"image_pretraining": _losses(img), "video_training": _losses(vid),
          "heldout": report_lib.video_tokenizer_quality(video_dir, cfg)}


def stage_audio_tok(cfg: DemoConfig, d: str, ctx: dict) -> dict:
  from vp_jax.models.soundstream.train import train
  _say(f"audio tokenizer: {cfg.audio_steps} steps of {cfg.audio_batch} x "
       f"{cfg.audio_clip_samples} samples")
  res = train(model_dir=d, model=cfg.audio_tokenizer, batch_size=cfg.audio_batch,
              clip_samples=cfg.audio_clip_samples, dataset=cfg.videos,
              trainer=_trainer(cfg.audio_steps, cfg.audio_lr, cfg.seed,
                               groups=("generator", "discriminator")))
  return {"training": _losses(res), "heldout": report_lib.audio_tokenizer_quality(d, cfg)}


def load_tokenizers(workdir: str):
  from vp_jax.data.tokenize import Tokenizers
  from vp_jax.text.demo import build_demo_encoder
  from vp_jax.tokenizers.audio_tokenizer import AudioTokenizer
  from vp_jax.tokenizers.video_tokenizer import VideoTokenizer
  return Tokenizers(video=VideoTokenizer.load(os.path.join(workdir, "video_tok", "video")),
                    audio=AudioTokenizer.load(os.path.join(workdir, "audio_tok")),
                    text=build_demo_encoder(os.path.join(workdir, "text_encoder")))


def _tokenizers(ctx: dict):
  """The trained tokenizers and text encoder, loaded once per process."""
  if "tokenizers" not in ctx:
    ctx["tokenizers"] = load_tokenizers(ctx["workdir"])
  return ctx["tokenizers"]


def stage_tokenize(cfg: DemoConfig, d: str, ctx: dict) -> dict:
  from vp_jax.data.tokenize import SyntheticSource, TokenizeConfig, tokenize_dataset
  tok = _tokenizers(ctx)
  # Only the features the demo's tasks read: no COMMIT masks, no stylization condition.
  tcfg = TokenizeConfig(masks=(), stylization=False, batch_size=8, shard_size=64)
  out = {}
  for name, data_cfg in (("videos", cfg.videos), ("images", cfg.images)):
    for split in ("train", "validation"):
      _say(f"tokenize {name}/{split}")
      m = tokenize_dataset(SyntheticSource(data_cfg, split), tok, os.path.join(d, name, split),
                           tcfg)
      out[f"{name}/{split}"] = {"examples": m.get("num_examples"), "shapes": m["shapes"],
                                "seconds": m.get("run_seconds")}
  return out


def register_demo_tasks(cfg: DemoConfig, workdir: str):
  """Registers the demo's seqio tasks (prefix `demo`) and the schedule `demo_mixture`."""
  from vp_jax.data.mixing import RateSchedule, Stage, register_schedule
  from vp_jax.tasks.videopoet_mixtures import register_videopoet
  tok_dir = os.path.join(workdir, "tokenize")
  data = {name: {split: os.path.join(tok_dir, name, split) for split in ("train", "validation")}
          for name in ("videos", "images")}
  reg = register_videopoet(data, vocab=cfg.lm.vocab, prefix=TASK_PREFIX, overwrite=True)
  rates = {}
  for kind, rate in cfg.mixture:
    names = [n for r in reg.datasets.values() for n in r.tasks.get(kind, [])]
    if not names:
      raise ValueError(f"demo mixture: no registered task of kind {kind!r}.")
    rates.update({n: rate / len(names) for n in names})
  register_schedule(f"{TASK_PREFIX}_mixture", RateSchedule((Stage(0.0, rates),)), overwrite=True)
  return reg, rates


def stage_lm(cfg: DemoConfig, d: str, ctx: dict) -> dict:
  from vp_jax.train.run_lm import train_lm
  _, rates = register_demo_tasks(cfg, ctx["workdir"])
  _say(f"LM ({cfg.lm.num_params() / 1e6:.1f}M parameters): {cfg.lm_steps} steps, batch "
       f"{cfg.lm_batch}, mixture {rates}")
  res = train_lm(model_dir=d, model=cfg.lm, mixture_or_task_name=f"{TASK_PREFIX}_mixture",
                 batch_size=cfg.lm_batch, task_modules=(),
                 trainer=_trainer(cfg.lm_steps, cfg.lm_lr, cfg.seed, groups=("model",)))
  return {"training": _losses(res), "mixture": rates}


def stage_generate(cfg: DemoConfig, d: str, ctx: dict) -> dict:
  from vp_jax.demo import samples
  tok = _tokenizers(ctx)
  return samples.generate_all(cfg, ctx["workdir"], d, tok)


def stage_report(cfg: DemoConfig, d: str, ctx: dict) -> dict:
  summaries = {s: _read(os.path.join(ctx["workdir"], s, "summary.json")) for s in STAGES[:-1]}
  return report_lib.write_report(ctx["workdir"], cfg, summaries, ctx["wall"])


STAGE_FNS: dict[str, Callable[[DemoConfig, str, dict], dict]] = {
    "data": stage_data, "video_tok": stage_video_tok, "audio_tok": stage_audio_tok,
    "tokenize": stage_tokenize, "lm": stage_lm, "generate": stage_generate,
    "report": stage_report}


def _read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _write(path: str, obj: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=float)
  os.replace(tmp, path)


def run_demo(workdir: str, config: DemoConfig, *, force: Sequence[str] = ()) -> dict:
  """Runs (or resumes) every stage; returns the report dict. `force`: stage names to redo from
  (that stage and every later one are rerun from scratch), or ("all",)."""
  unknown = [s for s in force if s not in STAGES + ("all",)]
  if unknown:
    raise ValueError(f"run_demo: unknown stages {unknown} in force; known: {STAGES}.")
  if jax.process_count() > 1:
    raise ValueError("run_demo runs in one process (use the launch/ scripts for multi-host).")
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  first_forced = min((STAGES.index(s) for s in force if s != "all"),
                     default=0 if "all" in force else len(STAGES))
  wall_path = os.path.join(workdir, "wall_seconds.json")
  wall = _read(wall_path) if os.path.exists(wall_path) and first_forced > 0 else {}
  ctx = {"workdir": workdir, "wall": wall}
  t_all = time.perf_counter()
  for i, stage in enumerate(STAGES):
    d = os.path.join(workdir, stage)
    summary_path = os.path.join(d, "summary.json")
    if i >= first_forced and os.path.exists(d):
      shutil.rmtree(d)
    if stage != "report" and os.path.exists(summary_path):
      _say(f"{stage}: done before, reusing {d} (force={stage} to redo)")
      continue
    os.makedirs(d, exist_ok=True)
    _say(f"{stage}: start")
    t0 = time.perf_counter()
    summary = STAGE_FNS[stage](config, d, ctx)
    if stage != "report":
      wall[stage] = round(time.perf_counter() - t0, 1)
      _write(wall_path, wall)
      _write(summary_path, summary)
    _say(f"{stage}: done in {time.perf_counter() - t0:.1f} s")
  _say(f"all stages in {time.perf_counter() - t_all:.1f} s this run; report: "
       f"{os.path.join(workdir, 'report.md')}")
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  import argparse
  from vp_jax.demo.config import preset
  p = argparse.ArgumentParser(description="The VideoPoet demo on the built-in dataset.")
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--preset", default="cpu")
  p.add_argument("--force", default="", help=f"comma-separated stages to redo: {STAGES} or all")
  args = p.parse_args(argv)
  run_demo(args.workdir, preset(args.preset),
           force=tuple(s for s in args.force.split(",") if s))
  return 0


if __name__ == "__main__":
  sys.exit(main())
