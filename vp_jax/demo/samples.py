"""The demo's generation stage: samples of four tasks, written as media, and the quality figure.

Conditions come from the dataset's validation split (never trained on): its captions are the
text-to-video prompts, its first frames the image-to-video inputs, its first 5 frames (2 latent
frames, the paper's K600 protocol) the continuation contexts and its clips the video-to-audio
inputs. Quality (issue 8): for `quality_samples` text-to-video samples, how often the detector
(`vp_jax.data.synthetic.detect`) finds the prompt's colour, shape and motion direction, next to the
same detector on (a) the real clip the prompt describes, (b) that clip after the video tokenizer
(the ceiling the LM can reach) and (c) a random other real clip (chance).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from vp_jax.data.synthetic.dataset import SyntheticVideos, flat_labels
from vp_jax.data.synthetic.detect import agreement, detect
from vp_jax.data.tokenized import load_manifest
from vp_jax.demo import media
from vp_jax.demo.config import DemoConfig
from vp_jax.generate.pipeline import DataShapes, Generator
from vp_jax.models.prefix_lm.load import load_prefix_lm
from vp_jax.parallel.mesh import MeshConfig, make_mesh
from vp_jax.parallel.rules import get_rules

CONTINUATION_CONTEXT = 2    # latent frames = 5 pixel frames (paper 5.1, K600)
FIELDS = ("colour", "shape", "direction")


def _match_rates(detected: list[dict], labels: list[dict]) -> dict[str, float]:
  agree = [agreement(d, l) for d, l in zip(detected, labels)]
  rates = {k: float(np.mean([a[k] for a in agree])) for k in FIELDS}
  rates["all_three"] = float(np.mean([all(a.values()) for a in agree]))
  return rates


def build_generator(cfg: DemoConfig, workdir: str, tokenizers) -> tuple[Generator, int]:
  mesh, rules = make_mesh(MeshConfig()), get_rules("default")
  lm, step = load_prefix_lm(os.path.join(workdir, "lm"), cfg.lm, mesh, rules)
  shapes = DataShapes.from_manifest(load_manifest(os.path.join(workdir, "tokenize", "videos",
                                                               "train")))
  return Generator(lm, mesh, rules, video=tokenizers.video, audio=tokenizers.audio,
                   text=tokenizers.text, shapes=shapes), step


def generate_all(cfg: DemoConfig, workdir: str, out_dir: str, tokenizers) -> dict:
  gen, lm_step = build_generator(cfg, workdir, tokenizers)
  data = SyntheticVideos(cfg.videos, "validation")
  n_quality = min(cfg.quality_samples, len(data))
  examples = [data[i] for i in range(n_quality)]
  captions = [e["caption"] for e in examples]
  frames = np.stack([e["frames"] for e in examples])                 # uint8 [Q, T, H, W, 3]
  n = min(cfg.num_samples, n_quality)
  key = jax.random.key(cfg.seed)
  k_t2v, k_i2v, k_fp, k_v2a = jax.random.split(key, 4)
  fps = cfg.videos.fps
  summary: dict = {"lm_step": lm_step, "tasks": {}}

  print(f"[demo] generate text_to_video x {n_quality}", flush=True)
  t2v = gen.generate("text_to_video", k_t2v, prompts=captions, sampling=cfg.sampling)
  print(f"[demo] generate image_to_video x {n}", flush=True)
  i2v = gen.generate("image_to_video", k_i2v, prompts=captions[:n], video=frames[:n, :1],
                     sampling=cfg.sampling)
  print(f"[demo] generate future_prediction x {n}", flush=True)
  fp = gen.generate("future_prediction", k_fp, prompts=captions[:n], video=frames[:n],
                    context_frames=CONTINUATION_CONTEXT, sampling=cfg.sampling)
  print(f"[demo] generate video_to_audio x {n}", flush=True)
  v2a = gen.generate("video_to_audio", k_v2a, prompts=captions[:n], video=frames[:n],
                     sampling=cfg.sampling)

  rows = []
  for name, result, audio_of in (("text_to_video", t2v, None), ("image_to_video", i2v, None),
                                 ("future_prediction", fp, None),
                                 ("video_to_audio", v2a, "generated")):
    files = []
    for i in range(n):
      video = media.to_uint8(result.video[i]) if result.video is not None else frames[i]
      audio = result.audio[i] if result.audio is not None else None
      files += media.write_clip(os.path.join(out_dir, f"{name}_{i}"), video, fps, audio=audio,
                                scale=cfg.display_scale)
      rows.append((f"{name} {i}", video))
    lay = gen.layout(name, with_text=True,
                     context_frames=CONTINUATION_CONTEXT if name == "future_prediction" else None)
    summary["tasks"][name] = {"prompts": captions[:n], "files": files,
                              "sequence_length": lay.length, "prefix_length": lay.prefix_length,
                              "output_tokens": lay.output_length}
  for i in range(n):
    rows.append((f"real {i}", frames[i]))
  sheet = media.contact_sheet(os.path.join(out_dir, "contact_sheet.png"), rows,
                              scale=cfg.display_scale)

  # Quality: detector agreement with the prompt's labels.
  labels = [flat_labels(e["labels"]) for e in examples]
  recon = np.asarray(tokenizers.video.decode(tokenizers.video.encode(frames)))
  rng = np.random.default_rng(cfg.seed)
  others = [int((i + rng.integers(1, n_quality)) % n_quality) if n_quality > 1 else i
            for i in range(n_quality)]
  summary["quality"] = {
      "num_prompts": n_quality,
      "generated_text_to_video": _match_rates([detect(v) for v in t2v.video], labels),
      "real_clip_of_the_prompt": _match_rates([detect(f) for f in frames], labels),
      "tokenizer_reconstruction": _match_rates([detect(v) for v in recon], labels),
      "random_other_real_clip": _match_rates([detect(frames[j]) for j in others], labels),
  }
  summary["contact_sheet"] = sheet
  return summary
