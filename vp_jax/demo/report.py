"""The demo's measurements and its report: tokenizer quality on held-out clips, and `report.md` /
`report.json` gathering every stage's figures (losses, PSNR, token counts, quality, wall time)."""
from __future__ import annotations

import json
import os

import numpy as np

from vp_jax.data.synthetic.dataset import SyntheticVideos
from vp_jax.demo.config import DemoConfig
from vp_jax.models.magvit.evaluate import psnr_db


def _heldout(cfg: DemoConfig) -> list[dict]:
  data = SyntheticVideos(cfg.videos, "validation")
  return [data[i] for i in range(min(cfg.eval_clips, len(data)))]


def video_tokenizer_quality(workdir: str, cfg: DemoConfig) -> dict:
  """Reconstruction PSNR and codebook usage of the trained video tokenizer on held-out clips."""
  from vp_jax.tokenizers.video_tokenizer import VideoTokenizer
  tok = VideoTokenizer.load(workdir)
  frames = np.stack([e["frames"] for e in _heldout(cfg)])
  ids = np.asarray(tok.encode(frames))
  recon = np.asarray(tok.decode(ids))
  p = psnr_db(recon, frames.astype(np.float32) / 255.0)
  return {"clips": int(frames.shape[0]), "psnr_db": float(np.mean(p)),
          "psnr_db_min": float(np.min(p)), "tokens_per_clip": int(np.prod(ids.shape[1:])),
          "distinct_codes": int(np.unique(ids).size),
          "codebook_size": 2 ** cfg.video_tokenizer.embedding_dim}


def audio_tokenizer_quality(workdir: str, cfg: DemoConfig) -> dict:
  """Log-mel distance and SNR of the trained audio tokenizer on held-out soundtracks, next to
  the log-mel distance of silence (a reference point: what an untrained codec scores about)."""
  import jax.numpy as jnp
  from vp_jax.models.soundstream.spectral import log_mel_distance, snr_db
  from vp_jax.tokenizers.audio_tokenizer import AudioTokenizer
  tok = AudioTokenizer.load(workdir)
  wave = np.stack([e["audio"] for e in _heldout(cfg)])
  ids = np.asarray(tok.encode(wave))
  recon = np.asarray(tok.decode(ids, num_samples=wave.shape[1]))
  dist = np.asarray(log_mel_distance(jnp.asarray(wave), jnp.asarray(recon)))
  silent = np.asarray(log_mel_distance(jnp.asarray(wave), jnp.zeros_like(jnp.asarray(wave))))
  return {"clips": int(wave.shape[0]), "log_mel_distance": float(dist.mean()),
          "log_mel_distance_of_silence": float(silent.mean()),
          "snr_db": float(np.mean(np.asarray(snr_db(jnp.asarray(wave), jnp.asarray(recon))))),
          "tokens_per_clip": int(np.prod(ids.shape[1:])),
          "distinct_codes_per_level": [int(np.unique(ids[:, k]).size)
                                       for k in range(ids.shape[1])]}


def _pct(x: float) -> str:
  return f"{100 * x:.0f}%"


def write_report(workdir: str, cfg: DemoConfig, summaries: dict, wall: dict) -> dict:
  """Writes report.json (everything) and report.md (the figures a reader wants); returns the dict."""
  report = {"stages": summaries, "wall_seconds": wall,
            "total_wall_seconds": round(sum(wall.values()), 1)}
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=1, default=float)
  vt, at = summaries["video_tok"], summaries["audio_tok"]
  lm, gen = summaries["lm"], summaries["generate"]
  lines = [
      "# vp_jax demo report", "",
      f"Data: synthetic {cfg.videos.hw[0]}x{cfg.videos.hw[1]} clips of {cfg.videos.num_frames} "
      f"frames ({cfg.videos.num_examples} train) and {cfg.images.num_examples} still images.", "",
      "| stage | wall (s) |", "|---|---|",
      *[f"| {s} | {t} |" for s, t in wall.items()],
      f"| **total** | **{report['total_wall_seconds']}** |", "",
      "## Training", "",
      "| model | steps | loss first -> last |", "|---|---|---|",
      *[f"| {name} | {r['last_step']} | {r['first_loss']:.4f} -> {r['last_loss']:.4f} |"
        for name, r in (("video tokenizer, images", vt["image_pretraining"]),
                        ("video tokenizer, clips (inflated)", vt["video_training"]),
                        ("audio tokenizer", at["training"]), ("prefix LM", lm["training"])) if r],
      "",
      f"Video tokenizer on {vt['heldout']['clips']} held-out clips: PSNR "
      f"{vt['heldout']['psnr_db']:.2f} dB (min {vt['heldout']['psnr_db_min']:.2f}), "
      f"{vt['heldout']['distinct_codes']} of {vt['heldout']['codebook_size']} codes used, "
      f"{vt['heldout']['tokens_per_clip']} tokens per clip.",
      f"Audio tokenizer on {at['heldout']['clips']} held-out soundtracks: log-mel distance "
      f"{at['heldout']['log_mel_distance']:.3f} (silence scores "
      f"{at['heldout']['log_mel_distance_of_silence']:.3f}), SNR {at['heldout']['snr_db']:.2f} "
      f"dB, {at['heldout']['tokens_per_clip']} tokens per clip.", "",
      "## Generation", "",
      "| task | sequence | prefix | output tokens | files |", "|---|---|---|---|---|",
      *[f"| {t} | {v['sequence_length']} | {v['prefix_length']} | {v['output_tokens']} | "
        f"{', '.join(os.path.relpath(p, workdir) for p in v['files'][:3])}"
        f"{' ...' if len(v['files']) > 3 else ''} |" for t, v in gen["tasks"].items()],
      "", f"Contact sheet: {os.path.relpath(gen['contact_sheet'], workdir)}", "",
      f"## Quality (text-to-video, {gen['quality']['num_prompts']} held-out prompts)", "",
      "How often the detector finds the prompt's colour, shape and motion direction:", "",
      "| clips | colour | shape | direction | all three |", "|---|---|---|---|---|",
      *[f"| {name.replace('_', ' ')} | {_pct(q['colour'])} | {_pct(q['shape'])} | "
        f"{_pct(q['direction'])} | {_pct(q['all_three'])} |"
        for name, q in gen["quality"].items() if isinstance(q, dict)],
  ]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines), flush=True)
  return report
