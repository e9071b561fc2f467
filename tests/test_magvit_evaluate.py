"""Held-out scoring of a video tokenizer (vp_jax/models/magvit/evaluate.py) and its CLI: PSNR per
clip and per frame on hand values, the held-out blocks it draws, a real (untrained) tokenizer's
score against a direct computation, bad arguments."""
import json
import os
import sys

import numpy as np
import pytest

from vp_jax.models.magvit import evaluate, preset, synthetic
from vp_jax.models.magvit.tokenizer import create_tokenizer
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_psnr_per_clip_and_per_frame():
  x = np.zeros((2, 3, 4, 4, 3))
  y = x.copy()
  y[0] += 0.1                                       # MSE 0.01 -> 20 dB
  y[1, 0] += 0.01                                   # frame 0: 40 dB; frames 1-2 exact
  np.testing.assert_allclose(evaluate.frame_psnr_db(y, x)[0], [20.0, 20.0, 20.0], rtol=1e-9)
  np.testing.assert_allclose(evaluate.frame_psnr_db(y, x)[1], [40.0, 120.0, 120.0], rtol=1e-9)
  np.testing.assert_allclose(evaluate.psnr_db(y, x),
                             [20.0, 10 * np.log10(1 / (1e-4 / 3))], rtol=1e-9)


class OffsetTokenizer:
  """encode = the clip itself; decode adds 0.1 to frame 0 and 0.01 to the others, so every clip
  scores the same known PSNR; records the clips it was given."""
  step = 7

  def __init__(self):
    self.seen = []

  def encode(self, clips):
    self.seen.append(clips)
    return clips

  def decode(self, ids):
    offset = np.full(ids.shape[1], 0.01)
    offset[0] = 0.1
    return ids / 255.0 + offset[None, :, None, None, None]


def test_score_held_out_on_a_known_error():
  tok = OffsetTokenizer()
  score = evaluate.score_held_out(tok, num_frames=5, height=8, width=16, blocks=3, block_size=2)
  mse = (0.01 + 4 * 1e-4) / 5
  assert score.step == 7 and score.clips == 6 and score.positions == 6 * 5 * 8 * 16 * 3
  np.testing.assert_allclose(score.psnr_db, 10 * np.log10(1 / mse), rtol=1e-6)
  np.testing.assert_allclose(score.block_psnr_db, [10 * np.log10(1 / mse)] * 3, rtol=1e-6)
  np.testing.assert_allclose(score.frame_psnr_db, [20.0, 40.0, 40.0, 40.0, 40.0], rtol=1e-6)
  # The baseline blends the decoded frames 0 (+0.1) and 4 (+0.01): frame j is off by
  # (1 - j/4) 0.1 + (j/4) 0.01 plus the blend's own error against the moving clip.
  clips = np.concatenate(tok.seen[0::2]) / 255.0       # seen[1::2]: the blended copies (below)
  recon = clips + np.array([0.1, 0.01, 0.01, 0.01, 0.01])[None, :, None, None, None]
  want = evaluate.frame_psnr_db(evaluate.keyframe_blend(recon), clips).mean(axis=0)
  np.testing.assert_allclose(score.blend_frame_psnr_db, want, rtol=1e-5)
  np.testing.assert_allclose(score.blend_frame_psnr_db[0], 20.0, rtol=1e-6)
  np.testing.assert_allclose(score.blend_frame_psnr_db[4], 40.0, rtol=1e-6)
  # The held-out blocks are batches 0, 1, 2 of the held-out seed's stream, each encoded as it is
  # and then with its in-between frames blended from its own chunk ends.
  held_out, blended = tok.seen[0::2], tok.seen[1::2]
  for i, clips in enumerate(held_out):
    np.testing.assert_array_equal(clips, synthetic.moving_shapes_batch(
        evaluate.HELD_OUT_SEED, i, 2, 5, 8, 16))
    np.testing.assert_array_equal(blended[i], np.rint(evaluate.keyframe_blend(clips)))
    assert blended[i].dtype == np.uint8
  # This tokenizer's ids are the pixels, so the change is the pixels the blend altered.
  changed = [evaluate.latent_change(c, b) for c, b in zip(held_out, blended)]
  assert score.inbetween_token_change == pytest.approx(np.mean([c[0] for c in changed]))
  assert score.inbetween_bit_change == pytest.approx(np.mean([c[1] for c in changed]))
  assert 0.05 < score.inbetween_token_change < 1
  assert f"{100 * score.inbetween_token_change:.1f} % of chunk tokens" in score.summary()
  assert score.distinct_codes == len(np.unique(np.concatenate(held_out)))
  assert "held-out PSNR" in score.summary() and "frame 0 20.00, frames 1-4 40.00-40.00" in (
      score.summary())
  assert f"{np.mean(want[1:]):.2f} with each chunk's in-between frames blended" in score.summary()
  images = evaluate.score_held_out(tok, num_frames=1, height=8, width=8, blocks=1, block_size=2)
  assert images.frame_psnr_db == pytest.approx((images.psnr_db,), rel=1e-9)
  assert "frame 0" not in images.summary() and images.blend_frame_psnr_db == ()
  assert images.inbetween_token_change is None and "chunk tokens" not in images.summary()
  assert json.loads(json.dumps(score.to_json()))["block_psnr_db"] == list(score.block_psnr_db)
  with pytest.raises(ValueError, match="blocks=0"):
    evaluate.score_held_out(tok, blocks=0)
  with pytest.raises(ValueError, match="keyframe_every=0"):
    evaluate.score_held_out(tok, keyframe_every=0)


def test_keyframe_blend_interpolates_between_chunk_ends():
  t = np.arange(9, dtype=np.float32)
  ramp = np.broadcast_to(t[None, :, None, None, None] ** 2, (2, 9, 2, 3, 1))
  out = evaluate.keyframe_blend(ramp, every=4)
  # keyframes 0, 4, 8 kept (0, 16, 64); frames between them on the line through them
  np.testing.assert_allclose(out[0, :, 0, 0, 0], [0, 4, 8, 12, 16, 28, 40, 52, 64])
  np.testing.assert_array_equal(evaluate.keyframe_blend(ramp, every=1), ramp)
  linear = np.broadcast_to(3 * t[None, :, None, None, None] + 1, (1, 9, 1, 1, 3))
  np.testing.assert_allclose(evaluate.keyframe_blend(linear, every=2), linear, rtol=1e-6)
  with pytest.raises(ValueError, match="8 frames are not 1 \\+ 4"):
    evaluate.keyframe_blend(ramp[:, :8])


def test_latent_change_counts_ids_and_bits_after_the_first_latent_frame():
  ids = np.array([[[7, 1], [5, 0], [2, 3]]])            # [B=1, T'=3, 2]
  other = np.array([[[0, 0], [6, 0], [2, 3 + 256]]])    # frame 0 ignored; 5^6 = 3, 3^259 = 256
  token, bits = evaluate.latent_change(ids, other)
  assert token == pytest.approx(2 / 4) and bits == pytest.approx((2 + 1) / 4)
  assert evaluate.latent_change(ids, ids) == (0.0, 0.0)
  big = np.array([[[0], [2**17 + 1]]])
  assert evaluate.latent_change(big, np.zeros_like(big)) == (1.0, 2.0)
  with pytest.raises(ValueError, match="at least 2 latent frames"):
    evaluate.latent_change(ids[:, :1], other[:, :1])
  with pytest.raises(ValueError, match="same shape"):
    evaluate.latent_change(ids, other[:, :2])


def test_an_inflated_tokenizer_ignores_in_between_frames():
  """Inflation zero-fills every earlier temporal tap, so a chunk's latent is its last frame's:
  blending the in-between frames changes no token. A model with non-zero taps does change."""
  from flax import nnx
  from vp_jax.models.magvit.inflation import inflate_tokenizer
  image = create_tokenizer(preset("tiny_image"), 1)
  video = create_tokenizer(preset("tiny"), 2)
  params = lambda m: nnx.to_pure_dict(nnx.state(m, nnx.Param))
  untrained = evaluate.score_held_out(VideoTokenizer.from_module(video), num_frames=9, height=16,
                                      width=16, blocks=1, block_size=4)
  nnx.update(video, inflate_tokenizer(params(image), params(video), preset("tiny")))
  inflated = evaluate.score_held_out(VideoTokenizer.from_module(video), num_frames=9, height=16,
                                     width=16, blocks=1, block_size=4)
  assert inflated.inbetween_token_change == 0.0 and inflated.inbetween_bit_change == 0.0
  assert untrained.inbetween_token_change > 0.05 and untrained.inbetween_bit_change > 0.05


def test_score_of_a_real_tokenizer_matches_a_direct_computation():
  tok = VideoTokenizer.from_module(create_tokenizer(preset("tiny"), 0))
  score = evaluate.score_held_out(tok, num_frames=5, height=16, width=16, blocks=2, block_size=2)
  clips = np.concatenate([synthetic.moving_shapes_batch(evaluate.HELD_OUT_SEED, i, 2, 5, 16, 16)
                          for i in range(2)])
  ids = np.asarray(tok.encode(clips))
  recon = np.asarray(tok.decode(ids))
  mse = np.mean((recon.astype(np.float64) - clips / 255.0) ** 2, axis=(1, 2, 3, 4))
  np.testing.assert_allclose(score.psnr_db, np.mean(10 * np.log10(1 / mse)), rtol=1e-5)
  assert score.distinct_codes == len(np.unique(ids)) and score.positions == ids.size
  assert len(score.frame_psnr_db) == 5 and score.step is None
  blended = np.rint(evaluate.keyframe_blend(clips)).astype(np.uint8)
  token, bits = evaluate.latent_change(ids, np.asarray(tok.encode(blended)))
  assert score.inbetween_token_change == pytest.approx(token)
  assert score.inbetween_bit_change == pytest.approx(bits)


def test_cli(monkeypatch, tmp_path, capsys):
  sys.path.insert(0, os.path.join(REPO, "launch"))
  try:
    import eval_video_tokenizer as cli
  finally:
    sys.path.pop(0)
  loaded = []

  def fake_load(workdir, step=None, weights="auto", cpu_convs="onednn"):
    loaded.append((workdir, step, weights) + (() if cpu_convs == "onednn" else (cpu_convs,)))
    tok = OffsetTokenizer()
    tok.step, tok.config = step, preset("tiny")   # the CLI blends at the config's temporal factor
    tok.weights = "params" if weights == "params" else "ema"
    return tok

  monkeypatch.setattr(VideoTokenizer, "load", staticmethod(fake_load))
  out = str(tmp_path / "scores.json")
  scores = cli.main(["--workdir", "w", "--steps", "100", "200", "--frames", "5", "--size", "8",
                     "--blocks", "1", "--block_size", "2", "--json", out])
  assert loaded == [("w", 100, "auto"), ("w", 200, "auto")]
  assert [s["step"] for s in json.load(open(out))] == [100, 200] == [s["step"] for s in scores]
  assert len(scores[0]["blend_frame_psnr_db"]) == 5 and scores[0]["weights"] == "ema"
  assert 0 < json.load(open(out))[0]["inbetween_token_change"] <= 1
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].startswith("step 100: held-out PSNR") and len(printed) == 2
  assert printed[0].endswith("; ema weights; cpu_convs onednn")
  assert scores[0]["cpu_convs"] == "onednn"
  scores = cli.main(["--workdir", "w", "--frames", "5", "--size", "8", "--blocks", "1",
                     "--block_size", "2", "--weights", "params", "--cpu_convs", "onednn_bf16"])
  assert loaded[-1] == ("w", None, "params", "onednn_bf16")
  assert capsys.readouterr().out.endswith("params weights; cpu_convs onednn_bf16\n")
  assert scores[0]["cpu_convs"] == "onednn_bf16"
  for bad, match in ((["--frames", "16"], "--frames: num_frames=16"), (["--size", "12"], "--size 12"),
                     (["--blocks", "0"], "--blocks 0"), (["--weights", "best"], "--weights"),
                     (["--cpu_convs", "mkl"], "--cpu_convs")):
    with pytest.raises(SystemExit):
      cli.parse_args(["--workdir", "w", *bad])
    assert match in capsys.readouterr().err
