"""Offline tokenization job with test stand-in tokenizers: paper token counts per format, feature
contents, resume after a kill, job mismatch, tfds sources, Beam parity."""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from data_standins import (CrashingVideoTokenizer, StandInAudioTokenizer, StandInTextEncoder,
                           StandInVideoTokenizer, _Embeddings, standin_tokenizers)

from vp_jax.data import conditions
from vp_jax.data.synthetic import SyntheticConfig, SyntheticVideos, flat_labels
from vp_jax.data.tokenize import SyntheticSource, TfdsSource, TokenizeConfig, Tokenizers
from vp_jax.data.tokenize import runner, shards
from vp_jax.data.tokenized import load_manifest, read_tokenized


def _run(out, source, tok=None, **cfg):
  config = TokenizeConfig(**{"shard_size": 4, "batch_size": 2, **cfg})
  return runner.tokenize_dataset(source, tok or standin_tokenizers(), str(out), config,
                                 progress=False)


@pytest.mark.parametrize("resolution,frames,video,audio", [
    ("128x128", 17, (5, 16, 16), (4, 106)),      # paper: 1280 tokens, 2.125 s -> 106 frames
    ("128x224", 17, (5, 28, 16), (4, 106)),      # portrait: 2240 tokens
    ("128x128", 41, (11, 16, 16), (4, 256)),     # 41 frames: 11 latent frames
    ("128x128", 1, (1, 16, 16), None),           # image: 256 tokens
    ("32x32", 17, (5, 4, 4), (4, 106)),          # tiny CPU preset
])
def test_token_counts_per_format(tmp_path, resolution, frames, video, audio):
  cfg = SyntheticConfig(resolution=resolution, num_frames=frames, num_examples=2, seed=1)
  manifest = _run(tmp_path, SyntheticSource(cfg))
  assert manifest["shapes"]["video_tokens"] == list(video)
  assert manifest["token_counts"]["video_tokens"] == int(np.prod(video))
  ds = list(read_tokenized(str(tmp_path)).as_numpy_iterator())
  assert len(ds) == 2
  ex = ds[0]
  assert ex["video_tokens"].shape == video and ex["video_tokens"].dtype == np.int32
  assert 0 <= ex["video_tokens"].min() and ex["video_tokens"].max() < 2 ** 18
  if audio is None:
    assert "audio_tokens" not in ex and "commit_inpaint_central_tokens" not in ex
    assert ex["kind"] == b"image" and not manifest["stylization"]
  else:
    assert ex["audio_tokens"].shape == audio and ex["has_audio"]
    assert 0 <= ex["audio_tokens"].min() and ex["audio_tokens"].max() < 1024
    for key in ("commit_inpaint_central_tokens", "commit_outpaint_central_tokens",
                "stylization_tokens"):
      assert ex[key].shape == video
    assert ex["first_frame_tokens"].shape == (1,) + video[1:]
  assert ex["text_embeddings"].shape == (64, 16) and ex["text_mask"].dtype == bool


def test_feature_contents_match_the_tokenizers(tmp_path):
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=5, seed=2)
  _run(tmp_path, SyntheticSource(cfg))
  videos = SyntheticVideos(cfg)
  vt, at, te = StandInVideoTokenizer(), StandInAudioTokenizer(), StandInTextEncoder()
  rows = list(read_tokenized(str(tmp_path)).as_numpy_iterator())
  assert [r["id"].decode() for r in rows] == [f"synthetic-train-{i:08d}" for i in range(5)]
  for i, row in enumerate(rows):
    ex = videos[i]
    f = ex["frames"][None]
    np.testing.assert_array_equal(row["video_tokens"], vt.encode(f)[0])
    np.testing.assert_array_equal(row["first_frame_tokens"], vt.encode(f[:, :1])[0])
    # The causal stand-in: first-frame tokens equal the video's first latent frame.
    np.testing.assert_array_equal(row["first_frame_tokens"], row["video_tokens"][:1])
    for kind in conditions.MASKS:
      visible = conditions.visible_mask(kind, 17, 32, 32)[None]
      np.testing.assert_array_equal(row[f"commit_{kind}_tokens"],
                                    vt.commit_encode(f, visible)[0][0])
      assert not np.array_equal(row[f"commit_{kind}_tokens"], row["video_tokens"])
    style = conditions.stylization_condition(ex["flow"], ex["depth"])[None]
    np.testing.assert_array_equal(row["stylization_tokens"], vt.encode(style)[0])
    np.testing.assert_array_equal(row["audio_tokens"], at.encode(ex["audio"][None])[0])
    emb = te.encode([ex["caption"]])
    np.testing.assert_array_equal(row["text_embeddings"],
                                  emb.embeddings[0].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(row["text_mask"], emb.mask[0])
    assert row["caption"].decode() == ex["caption"]
    flat = flat_labels(ex["labels"])
    assert row["label_colour"].decode() == flat["colour"]
    assert row["label_bounces"] == flat["bounces"]
    assert json.loads(row["labels_json"]) == ex["labels"]
    png = tf.io.decode_png(row["first_frame_png"]).numpy()
    np.testing.assert_array_equal(png, ex["frames"][0])
  manifest = load_manifest(str(tmp_path))
  assert manifest["num_examples"] == 5 and manifest["num_shards"] == 2
  assert manifest["tokenizers"]["video"]["version"] == "standin-1"
  assert manifest["has_labels"] and manifest["stylization"]


def _shard_bytes(path):
  names = sorted(n for n in os.listdir(path) if ".tfrecord-" in n and not n.endswith(".json"))
  return {n: open(os.path.join(path, n), "rb").read() for n in names}


def test_killed_and_restarted_run_gives_the_same_shards(tmp_path):
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=12, seed=7)
  source = SyntheticSource(cfg)
  _run(tmp_path / "whole", source)
  # Each batch of 2 makes 7 stand-in encode calls (video, first frame, 2 COMMIT x (condition,
  # target), stylization); a shard of 4 is 14 calls. Crash in the middle of shard 1 (call 21 of 42).
  crashing = standin_tokenizers(CrashingVideoTokenizer(crash_at_call=21))
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "killed", source, crashing)
  killed = tmp_path / "killed"
  names = sorted(os.listdir(killed))
  assert "train.tfrecord-00000-of-00003.json" in names  # shard 0 finished
  assert "train.tfrecord-00001-of-00003.json" not in names
  assert "train.tfrecord-00001-of-00003.tmp" in names   # half-written shard 1
  assert "manifest.json" not in names
  with pytest.raises(FileNotFoundError, match="not a finished"):
    read_tokenized(str(killed))
  resumed = standin_tokenizers()
  manifest = _run(killed, source, resumed)
  assert manifest["resumed_shards"] == 1
  assert resumed.video.calls == 2 * 14  # shards 1 and 2 only
  assert _shard_bytes(killed) == _shard_bytes(tmp_path / "whole")
  assert len(_shard_bytes(killed)) == 3
  # A finished job rerun writes nothing.
  again = standin_tokenizers()
  assert _run(killed, source, again)["resumed_shards"] == 3 and again.video.calls == 0


def test_restart_with_a_different_job_is_refused(tmp_path):
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=2, seed=7)
  _run(tmp_path, SyntheticSource(cfg))
  other = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=2, seed=8)
  with pytest.raises(shards.JobMismatchError, match="different tokenization job"):
    _run(tmp_path, SyntheticSource(other))
  with pytest.raises(shards.JobMismatchError):
    _run(tmp_path, SyntheticSource(cfg), box_fraction=0.25)


class _ListSource:
  """Real-data-like source: no labels, no flow/depth, audio on some clips only."""
  has_structure = False

  def __init__(self, examples):
    self.examples = examples

  def __len__(self):
    return len(self.examples)

  def read(self, start, stop):
    yield from self.examples[start:stop]

  def describe(self):
    return {"type": "list", "split": "train", "n": len(self.examples)}


def test_clips_without_audio_labels_or_structure(tmp_path):
  rng = np.random.default_rng(0)
  examples = []
  for i in range(3):
    has = i != 1
    examples.append({"id": f"clip{i}", "frames": rng.integers(0, 256, (17, 32, 32, 3), np.uint8),
                     "audio": rng.uniform(-1, 1, 34_000).astype(np.float32) if has
                     else np.zeros((0,), np.float32), "has_audio": has,
                     "caption": f"clip number {i}", "labels": {}})
  manifest = _run(tmp_path, _ListSource(examples))
  assert not manifest["stylization"] and not manifest["has_labels"]
  assert manifest["num_with_audio"] == 2
  rows = list(read_tokenized(str(tmp_path)).as_numpy_iterator())
  assert [bool(r["has_audio"]) for r in rows] == [True, False, True]
  assert np.all(rows[1]["audio_tokens"] == -1) and rows[0]["audio_tokens"].shape == (4, 106)
  assert "stylization_tokens" not in rows[0] and "label_colour" not in rows[0]
  with pytest.raises(ValueError, match="optical flow and depth"):
    _run(tmp_path / "s", _ListSource(examples), stylization=True)


def test_tfds_synthetic_source_matches_direct_source(tmp_path):
  from vp_jax.data.synthetic.tfds_builder import SyntheticShapes, SyntheticShapesConfig
  builder = SyntheticShapes(config=SyntheticShapesConfig(name="t", resolution="32x32",
                                                         num_frames=17, num_examples=3, seed=4),
                            data_dir=str(tmp_path / "tfds"))
  builder.download_and_prepare()
  src = TfdsSource(builder.data_dir, "train")
  assert len(src) == 3 and src.has_structure
  first = next(src.read(0, 1))
  direct = SyntheticVideos(SyntheticConfig(resolution="32x32", num_frames=17, num_examples=3,
                                           seed=4))
  by_id = {direct[i]["id"]: direct[i] for i in range(3)}
  ref = by_id[first["id"]]
  np.testing.assert_array_equal(first["frames"], ref["frames"])
  np.testing.assert_array_equal(first["audio"], ref["audio"])
  assert first["labels"] == ref["labels"]
  np.testing.assert_allclose(first["flow"], ref["flow"], atol=0.01)
  manifest = _run(tmp_path / "tok", src)
  assert manifest["num_examples"] == 3 and manifest["has_labels"]


def test_progress_line_reports_clips_per_second(tmp_path):
  cfg = SyntheticConfig(resolution="32x32", num_frames=1, num_examples=3)
  stream = io.StringIO()
  runner.tokenize_dataset(SyntheticSource(cfg), Tokenizers(video=StandInVideoTokenizer()),
                          str(tmp_path), TokenizeConfig(shard_size=2, batch_size=2),
                          stream=stream)
  assert "clips/s" in stream.getvalue() and "3/3" in stream.getvalue()


def test_beam_pipeline_writes_the_same_shards(tmp_path):
  pytest.importorskip("apache_beam")
  from vp_jax.data.tokenize.beam_pipeline import tokenize_dataset_beam
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=6, seed=9)
  source = SyntheticSource(cfg)
  _run(tmp_path / "local", source)
  config = TokenizeConfig(shard_size=4, batch_size=2)
  manifest = tokenize_dataset_beam(source, standin_tokenizers, str(tmp_path / "beam"), config)
  assert manifest["num_examples"] == 6 and manifest["resumed_shards"] == 0
  assert _shard_bytes(tmp_path / "beam") == _shard_bytes(tmp_path / "local")
  again = tokenize_dataset_beam(source, standin_tokenizers, str(tmp_path / "beam"), config)
  assert again["resumed_shards"] == 2


def test_command_line_runs_the_job(tmp_path, monkeypatch, capsys):
  import vp_jax.data.tokenize.__main__ as cli
  # The real tokenizers load from checkpoints; the CLI plumbing is checked with the stand-ins.
  monkeypatch.setattr(cli, "load_tokenizers", lambda *args: standin_tokenizers())
  out = tmp_path / "cli"
  assert cli.main([f"--out_dir={out}", "--synthetic=32x32", "--num_frames=17",
                   "--num_examples=3", "--video_tokenizer=unused", "--shard_size=2",
                   "--batch_size=2"]) == 0
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed["num_examples"] == 3 and printed["token_counts"]["video_tokens"] == 80
  assert load_manifest(str(out))["source"]["config"]["resolution"] == [32, 32]


def test_benchmark_script_runs(tmp_path):
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "data_pipeline.py"
  spec = importlib.util.spec_from_file_location("bench_data_pipeline", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = bench.main(["--clips", "2", "--skip_lm"])
  assert set(out) >= {"decode_128", "render_32", "tokenize_32", "read_32"}
  assert all(v > 0 for v in out.values())


_KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from data_standins import StandInVideoTokenizer, standin_tokenizers
from vp_jax.data.synthetic import SyntheticConfig
from vp_jax.data.tokenize import SyntheticSource, TokenizeConfig, tokenize_dataset

class Slow(StandInVideoTokenizer):
  def encode(self, frames):
    time.sleep(0.05)
    return super().encode(frames)

cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=12, seed=7)
tokenize_dataset(SyntheticSource(cfg), standin_tokenizers(Slow()), {out!r},
                 TokenizeConfig(shard_size=4, batch_size=2), progress=False)
"""


@pytest.mark.slow  # ~15-40 s: a child process imports TensorFlow
def test_sigkilled_process_resumes_to_the_same_shards(tmp_path):
  import pathlib
  import signal
  import subprocess
  import sys
  import time
  tests = str(pathlib.Path(__file__).resolve().parent)
  out = tmp_path / "killed"
  script = _KILL_SCRIPT.format(tests=tests, out=str(out))
  proc = subprocess.Popen([sys.executable, "-c", script],
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  first = out / "train.tfrecord-00000-of-00003.json"
  deadline = time.time() + 300
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert first.exists(), "the child never finished shard 0"
  assert not (out / "manifest.json").exists()
  source = SyntheticSource(SyntheticConfig(resolution="32x32", num_frames=17, num_examples=12,
                                           seed=7))
  manifest = _run(out, source)
  assert manifest["resumed_shards"] >= 1
  _run(tmp_path / "whole", source)
  assert _shard_bytes(out) == _shard_bytes(tmp_path / "whole")


class _DictCache:
  """Stand-in for vp_jax.text EmbeddingCache: computes each distinct caption once."""

  def __init__(self):
    self.store, self.computed = {}, 0

  def get_or_compute(self, texts, encoder):
    missing = sorted({t for t in texts if t not in self.store})
    if missing:
      emb = encoder.encode(missing)
      self.computed += len(missing)
      for i, t in enumerate(missing):
        self.store[t] = (emb.embeddings[i], emb.mask[i], emb.num_truncated[i])
    rows = [self.store[t] for t in texts]
    return _Embeddings(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                       np.array([r[2] for r in rows]))


def test_text_embeddings_go_through_the_cache_when_given(tmp_path):
  examples = [{"id": f"c{i}", "frames": np.zeros((1, 16, 16, 3), np.uint8),
               "audio": np.zeros((0,), np.float32), "has_audio": False,
               "caption": "same caption" if i % 2 else f"caption {i}", "labels": {}}
              for i in range(6)]
  cache = _DictCache()
  tok = Tokenizers(video=StandInVideoTokenizer(), text=StandInTextEncoder(), text_cache=cache)
  _run(tmp_path, _ListSource(examples), tok)
  assert cache.computed == 4  # "same caption" + captions 0, 2, 4
  rows = list(read_tokenized(str(tmp_path)).as_numpy_iterator())
  direct = StandInTextEncoder().encode([e["caption"] for e in examples])
  np.testing.assert_array_equal(np.stack([r["text_embeddings"] for r in rows]),
                                direct.embeddings.astype(np.float16).astype(np.float32))


def test_real_t5_encoder_and_embedding_cache_feed_the_job(tmp_path):
  """The job with the real text path (demo T5 encoder + on-disk EmbeddingCache keyed by the
  encoder's model_id): stored embeddings equal a direct encode, and a rerun hits the cache."""
  from vp_jax.text import EmbeddingCache
  from vp_jax.text.demo import build_demo_encoder
  encoder = build_demo_encoder(tmp_path / "t5")
  examples = [{"id": f"c{i}", "frames": np.zeros((1, 16, 16, 3), np.uint8),
               "audio": np.zeros((0,), np.float32), "has_audio": False,
               "caption": f"a red circle moves {d} over a blue background", "labels": {}}
              for i, d in enumerate(["left", "right", "up", "down"])]
  cache = EmbeddingCache(str(tmp_path / "cache"), encoder.model_id)
  tok = Tokenizers(video=StandInVideoTokenizer(), text=encoder, text_cache=cache)
  _run(tmp_path / "out", _ListSource(examples), tok)
  rows = list(read_tokenized(str(tmp_path / "out")).as_numpy_iterator())
  direct = encoder.encode([e["caption"] for e in examples])
  assert direct.embeddings.shape[1] == 64
  np.testing.assert_array_equal(np.stack([r["text_embeddings"] for r in rows]),
                                direct.embeddings.astype(np.float16).astype(np.float32))
  np.testing.assert_array_equal(np.stack([r["text_mask"] for r in rows]), direct.mask)
  for i, e in enumerate(examples):
    embeddings, mask, _ = cache.get(e["caption"])
    np.testing.assert_array_equal(embeddings, direct.embeddings[i])
    np.testing.assert_array_equal(mask, direct.mask[i])
