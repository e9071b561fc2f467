"""Offline tokenization job with the real tokenizers (MAGVIT-v2, SoundStream, demo T5; untrained,
loaded from checkpoints, tests/real_tokenizers.py): paper token counts per format, feature contents,
resume after a kill, the tokenizer records in the manifest, job mismatch, tfds sources, Beam parity.
"""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from real_tokenizers import (BATCH, MAGVIT, SOUNDSTREAM, TEXT_DIM, CallCountingVideoTokenizer,
                             fill, load_tokenizers, tokenizers, with_video, workdirs)
from tokenize_fakes import ListSource

from vp_jax.data import conditions
from vp_jax.data.synthetic import SyntheticConfig, SyntheticVideos, flat_labels
from vp_jax.data.tokenize import SyntheticSource, TfdsSource, TokenizeConfig, Tokenizers
from vp_jax.data.tokenize import runner, shards
from vp_jax.data.tokenized import load_manifest, read_tokenized
from vp_jax.tokenizers.untrained import (write_untrained_audio_tokenizer,
                                         write_untrained_video_tokenizer)


def _run(out, source, tok=None, **cfg):
  config = TokenizeConfig(**{"shard_size": 4, "batch_size": BATCH, **cfg})
  return runner.tokenize_dataset(source, tok or tokenizers(), str(out), config, progress=False)


# Each new (T, H, W) compiles MAGVIT 2-3 times (uint8 video, first frame, float COMMIT input):
# the paper's video formats with every feature take ~1-2 min each on a 2-core CPU, so they are slow;
# the default run checks the 32x32 formats (sharing the other tests' compiles), 41 frames at 32x32
# without COMMIT/stylization, and the paper's image format.
_SLOW = pytest.mark.slow
FORMATS = [
    ("32x32", 17, (5, 4, 4), (4, 106), True),     # the CPU demo format; 2.125 s -> 106 frames
    ("32x32", 1, (1, 4, 4), None, True),          # CPU image
    ("32x32", 41, (11, 4, 4), (4, 256), False),   # 41 frames: 11 latent frames, 5.125 s audio
    ("128x128", 1, (1, 16, 16), None, True),      # paper image: 256 tokens
    pytest.param("128x128", 17, (5, 16, 16), (4, 106), True, marks=_SLOW),  # paper: 1280 tokens
    pytest.param("128x224", 17, (5, 28, 16), (4, 106), True, marks=_SLOW),  # portrait: 2240
    pytest.param("128x128", 41, (11, 16, 16), (4, 256), True, marks=_SLOW),  # 11 x 256 tokens
]


@pytest.mark.parametrize("resolution,frames,video,audio,conditions", FORMATS)
def test_token_counts_per_format(tmp_path, resolution, frames, video, audio, conditions):
  cfg = SyntheticConfig(resolution=resolution, num_frames=frames, num_examples=2, seed=1)
  extra = {} if conditions else {"masks": (), "stylization": False}
  manifest = _run(tmp_path, SyntheticSource(cfg), **extra)
  assert manifest["shapes"]["video_tokens"] == list(video)
  assert manifest["token_counts"]["video_tokens"] == int(np.prod(video))
  ds = list(read_tokenized(str(tmp_path)).as_numpy_iterator())
  assert len(ds) == 2
  ex = ds[0]
  assert ex["video_tokens"].shape == video and ex["video_tokens"].dtype == np.int32
  assert 0 <= ex["video_tokens"].min() and ex["video_tokens"].max() < MAGVIT.codebook_size
  assert len(np.unique(ex["video_tokens"])) > 1
  if audio is None:
    assert "audio_tokens" not in ex and "commit_inpaint_central_tokens" not in ex
    assert ex["kind"] == b"image" and not manifest["stylization"]
  else:
    assert ex["audio_tokens"].shape == audio and ex["has_audio"]
    assert manifest["token_counts"]["audio_tokens"] == int(np.prod(audio))
    assert 0 <= ex["audio_tokens"].min() and ex["audio_tokens"].max() < SOUNDSTREAM.codebook_size
    keys = ("commit_inpaint_central_tokens", "commit_outpaint_central_tokens",
            "stylization_tokens")
    for key in keys:
      assert (ex[key].shape == video) if conditions else key not in ex
    assert ex["first_frame_tokens"].shape == (1,) + video[1:]
  assert ex["text_embeddings"].shape == (64, TEXT_DIM) and ex["text_mask"].dtype == bool


def test_feature_contents_match_the_tokenizers(tmp_path):
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=5, seed=2)
  _run(tmp_path, SyntheticSource(cfg))
  videos = SyntheticVideos(cfg)
  tok = tokenizers()
  vt, at, te = tok.video, tok.audio, tok.text
  examples = [videos[i] for i in range(5)]

  def direct(fn, arrays):
    """fn on the job's batches (pairs; the last filled by repetition): the same compiled shapes."""
    out = []
    for start in range(0, len(arrays), BATCH):
      chunk = np.stack(arrays[start:start + BATCH])
      out.extend(np.asarray(fn(fill(chunk)))[:len(chunk)])
    return out

  video = direct(vt.encode, [e["frames"] for e in examples])
  first = direct(vt.encode, [e["frames"][:1] for e in examples])
  commit = {kind: direct(lambda f, k=kind: vt.commit_encode(f, np.broadcast_to(
      conditions.visible_mask(k, 17, 32, 32), f.shape[:4]))[0], [e["frames"] for e in examples])
      for kind in conditions.MASKS}
  style = direct(vt.encode, [conditions.stylization_condition(e["flow"], e["depth"])
                             for e in examples])
  audio = direct(at.encode, [e["audio"] for e in examples])
  captions = [e["caption"] for e in examples]
  text = te.encode(captions)
  rows = list(read_tokenized(str(tmp_path)).as_numpy_iterator())
  assert [r["id"].decode() for r in rows] == [f"synthetic-train-{i:08d}" for i in range(5)]
  for i, row in enumerate(rows):
    ex = examples[i]
    np.testing.assert_array_equal(row["video_tokens"], video[i])
    np.testing.assert_array_equal(row["first_frame_tokens"], first[i])
    # MAGVIT-v2 is causal: the first frame's tokens are the video's first latent frame.
    np.testing.assert_array_equal(row["first_frame_tokens"], row["video_tokens"][:1])
    for kind in conditions.MASKS:
      np.testing.assert_array_equal(row[f"commit_{kind}_tokens"], commit[kind][i])
      assert not np.array_equal(row[f"commit_{kind}_tokens"], row["video_tokens"])
    np.testing.assert_array_equal(row["stylization_tokens"], style[i])
    np.testing.assert_array_equal(row["audio_tokens"], audio[i])
    np.testing.assert_array_equal(row["text_embeddings"],
                                  text.embeddings[i].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(row["text_mask"], text.mask[i])
    # The demo T5 vocabulary covers the dataset's captions: one piece per word (+ commas, EOS).
    assert row["text_mask"].sum() == len(ex["caption"].split()) + ex["caption"].count(",") + 1
    assert row["caption"].decode() == ex["caption"]
    flat = flat_labels(ex["labels"])
    assert row["label_colour"].decode() == flat["colour"]
    assert row["label_bounces"] == flat["bounces"]
    assert json.loads(row["labels_json"]) == ex["labels"]
    png = tf.io.decode_png(row["first_frame_png"]).numpy()
    np.testing.assert_array_equal(png, ex["frames"][0])
  manifest = load_manifest(str(tmp_path))
  assert manifest["num_examples"] == 5 and manifest["num_shards"] == 2
  assert manifest["has_labels"] and manifest["stylization"]


def test_manifest_records_the_tokenizer_checkpoints(tmp_path):
  cfg = SyntheticConfig(resolution="32x32", num_frames=1, num_examples=2, seed=2)
  manifest = _run(tmp_path, SyntheticSource(cfg))
  dirs = workdirs()
  video, audio, text = (manifest["tokenizers"][k] for k in ("video", "audio", "text"))
  assert video["class"] == "vp_jax.tokenizers.video_tokenizer.VideoTokenizer"
  assert (video["checkpoint"], video["step"]) == (dirs["video"], 0)
  assert video["version"] == "magvit-v2/1" and video["codebook_size"] == 2 ** 10
  assert audio["class"] == "vp_jax.tokenizers.audio_tokenizer.AudioTokenizer"
  assert (audio["checkpoint"], audio["step"]) == (os.path.join(dirs["audio"], "checkpoints"), 0)
  assert (audio["levels"], audio["codebook_size"]) == (4, 256)
  assert text["class"] == "vp_jax.text.encoder.TextEncoder" and text["version"] == "t5-demo"
  assert text["checkpoint"] == dirs["text"] and text["model_id"] == tokenizers().text.model_id
  # The records are part of the job: the same data with another checkpoint is another job.
  assert json.load(open(tmp_path / "job.json"))["tokenizers"] == manifest["tokenizers"]
  # The untrained workdirs are a checkpoint like a training run's; never written over one.
  assert sorted(os.listdir(os.path.join(dirs["video"], "checkpoints"))) == ["0"]
  with pytest.raises(FileExistsError, match="already holds checkpoints"):
    write_untrained_video_tokenizer(dirs["video"], MAGVIT)
  with pytest.raises(FileExistsError, match="already holds checkpoints"):
    write_untrained_audio_tokenizer(dirs["audio"], SOUNDSTREAM)


def _shard_bytes(path):
  names = sorted(n for n in os.listdir(path) if ".tfrecord-" in n and not n.endswith(".json"))
  return {n: open(os.path.join(path, n), "rb").read() for n in names}


def test_killed_and_restarted_run_gives_the_same_shards(tmp_path):
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=12, seed=7)
  source = SyntheticSource(cfg)
  _run(tmp_path / "whole", source)
  # Each batch of 2 makes 5 video tokenizer calls (video, first frame, 2 COMMIT, stylization); a
  # shard of 4 is 10 calls. Kill in the middle of shard 1 (at call 16 of 30).
  real = tokenizers().video
  killed_at_16 = with_video(CallCountingVideoTokenizer(real, kill_at_call=16))
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "killed", source, killed_at_16)
  killed = tmp_path / "killed"
  names = sorted(os.listdir(killed))
  assert "train.tfrecord-00000-of-00003.json" in names  # shard 0 finished
  assert "train.tfrecord-00001-of-00003.json" not in names
  assert "train.tfrecord-00001-of-00003.tmp" in names   # half-written shard 1
  assert "manifest.json" not in names
  with pytest.raises(FileNotFoundError, match="not a finished"):
    read_tokenized(str(killed))
  resumed = with_video(CallCountingVideoTokenizer(real))
  manifest = _run(killed, source, resumed)
  assert manifest["resumed_shards"] == 1
  assert resumed.video.calls == 2 * 10  # shards 1 and 2 only
  assert _shard_bytes(killed) == _shard_bytes(tmp_path / "whole")
  assert len(_shard_bytes(killed)) == 3
  # A finished job rerun writes nothing.
  again = with_video(CallCountingVideoTokenizer(real))
  assert _run(killed, source, again)["resumed_shards"] == 3 and again.video.calls == 0


def test_restart_with_a_different_job_is_refused(tmp_path):
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=2, seed=7)
  _run(tmp_path, SyntheticSource(cfg))
  other = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=2, seed=8)
  with pytest.raises(shards.JobMismatchError, match="different tokenization job"):
    _run(tmp_path, SyntheticSource(other))
  with pytest.raises(shards.JobMismatchError):
    _run(tmp_path, SyntheticSource(cfg), box_fraction=0.25)


def test_clips_without_audio_labels_or_structure(tmp_path):
  rng = np.random.default_rng(0)
  examples = []
  for i in range(3):
    has = i != 1
    examples.append({"id": f"clip{i}", "frames": rng.integers(0, 256, (17, 32, 32, 3), np.uint8),
                     "audio": rng.uniform(-1, 1, 34_000).astype(np.float32) if has
                     else np.zeros((0,), np.float32), "has_audio": has,
                     "caption": f"clip number {i}", "labels": {}})
  manifest = _run(tmp_path, ListSource(examples))
  assert not manifest["stylization"] and not manifest["has_labels"]
  assert manifest["num_with_audio"] == 2
  rows = list(read_tokenized(str(tmp_path)).as_numpy_iterator())
  assert [bool(r["has_audio"]) for r in rows] == [True, False, True]
  assert np.all(rows[1]["audio_tokens"] == -1) and rows[0]["audio_tokens"].shape == (4, 106)
  assert "stylization_tokens" not in rows[0] and "label_colour" not in rows[0]
  with pytest.raises(ValueError, match="optical flow and depth"):
    _run(tmp_path / "s", ListSource(examples), stylization=True)


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
  runner.tokenize_dataset(SyntheticSource(cfg), Tokenizers(video=tokenizers().video),
                          str(tmp_path), TokenizeConfig(shard_size=2, batch_size=BATCH),
                          stream=stream)
  assert "clips/s" in stream.getvalue() and "3/3" in stream.getvalue()


def test_beam_pipeline_writes_the_same_shards(tmp_path):
  pytest.importorskip("apache_beam")
  from vp_jax.data.tokenize.beam_pipeline import tokenize_dataset_beam
  cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=6, seed=9)
  source = SyntheticSource(cfg)
  _run(tmp_path / "local", source)
  config = TokenizeConfig(shard_size=4, batch_size=BATCH)
  # Workers load their own tokenizers from the checkpoints (a picklable module-level function).
  manifest = tokenize_dataset_beam(source, load_tokenizers, str(tmp_path / "beam"), config)
  assert manifest["num_examples"] == 6 and manifest["resumed_shards"] == 0
  assert _shard_bytes(tmp_path / "beam") == _shard_bytes(tmp_path / "local")
  again = tokenize_dataset_beam(source, load_tokenizers, str(tmp_path / "beam"), config)
  assert again["resumed_shards"] == 2


def test_command_line_runs_the_job(tmp_path, monkeypatch, capsys):
  import vp_jax.data.tokenize.__main__ as cli
  # The CLI loads the checkpoints it is given with cli.load_tokenizers (default mesh: all 8 test
  # devices); here it gets the already loaded one-device instances of the same checkpoints, which
  # keeps this test's compiles shared with the others.
  dirs, loaded = workdirs(), []

  def load(*args):
    loaded.append(args)
    return tokenizers()

  monkeypatch.setattr(cli, "load_tokenizers", load)
  out = tmp_path / "cli"
  assert cli.main([f"--out_dir={out}", "--synthetic=32x32", "--num_frames=17",
                   "--num_examples=3", f"--video_tokenizer={dirs['video']}",
                   f"--audio_tokenizer={dirs['audio']}", f"--text_encoder={dirs['text']}",
                   "--shard_size=2", f"--batch_size={BATCH}"]) == 0
  assert loaded == [(dirs["video"], dirs["audio"], dirs["text"], None, "onednn")]
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed["num_examples"] == 3 and printed["token_counts"]["video_tokens"] == 80
  assert printed["token_counts"]["audio_tokens"] == 4 * 106
  assert load_manifest(str(out))["source"]["config"]["resolution"] == [32, 32]
  assert cli.main([f"--out_dir={tmp_path / 'cli16'}", "--synthetic=32x32", "--num_examples=1",
                   f"--video_tokenizer={dirs['video']}", "--video_cpu_convs=onednn_bf16",
                   "--shard_size=2", f"--batch_size={BATCH}"]) == 0
  assert loaded[-1] == (dirs["video"], None, None, None, "onednn_bf16")
  with pytest.raises(SystemExit):
    cli.main([f"--out_dir={out}", "--synthetic=32x32", f"--video_tokenizer={dirs['video']}",
              "--video_cpu_convs=mkl"])


def test_benchmark_script_runs(tmp_path):
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "data_pipeline.py"
  spec = importlib.util.spec_from_file_location("bench_data_pipeline", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  # The test's tokenizers (compiled already) instead of the demo's `small` presets.
  out = bench.main(["--clips", "2", "--tokenize_batch", str(BATCH), "--skip_lm"],
                   tokenizers=tokenizers())
  assert set(out) >= {"decode_128", "render_32", "tokenize_32", "read_32", "tokenize_video_s",
                      "tokenize_audio_s", "tokenize_text_s"}
  assert all(v > 0 for v in out.values())
  assert out["tokenize_video_s"] + out["tokenize_audio_s"] + out["tokenize_text_s"] < 2 / out[
      "tokenize_32"]                                  # time inside the tokenizers < the job's
  magvit, soundstream = bench.demo_tokenizer_configs()
  assert 2 ** magvit.embedding_dim == 1024 and magvit.filters == 32   # `small`, SMALL_VOCAB sizes
  assert (soundstream.num_levels, soundstream.codebook_size) == (4, 256)


_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from real_tokenizers import load_tokenizers
from vp_jax.data.synthetic import SyntheticConfig
from vp_jax.data.tokenize import SyntheticSource, TokenizeConfig, tokenize_dataset

cfg = SyntheticConfig(resolution="32x32", num_frames=17, num_examples=12, seed=7)
tokenize_dataset(SyntheticSource(cfg), load_tokenizers({dirs!r}), {out!r},
                 TokenizeConfig(shard_size=4, batch_size=2), progress=False)
"""


@pytest.mark.slow  # ~1-2 min: a child process imports TensorFlow and compiles the tokenizers
def test_sigkilled_process_resumes_to_the_same_shards(tmp_path):
  import pathlib
  import signal
  import subprocess
  import sys
  import time
  tests = str(pathlib.Path(__file__).resolve().parent)
  out = tmp_path / "killed"
  script = _KILL_SCRIPT.format(tests=tests, dirs=workdirs(), out=str(out))
  proc = subprocess.Popen([sys.executable, "-c", script],
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  first = out / "train.tfrecord-00000-of-00003.json"
  deadline = time.time() + 600
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


def _caption_examples(captions):
  return [{"id": f"c{i}", "frames": np.zeros((1, 32, 32, 3), np.uint8),
           "audio": np.zeros((0,), np.float32), "has_audio": False, "caption": c, "labels": {}}
          for i, c in enumerate(captions)]


def test_text_embeddings_go_through_the_cache_when_given(tmp_path):
  """The job with the real text path (demo T5 encoder + on-disk EmbeddingCache keyed by the
  encoder's model_id): each distinct caption is encoded once, stored embeddings equal a direct
  encode, and a rerun into a new directory is served from the cache."""
  from vp_jax.text import EmbeddingCache
  encoder = tokenizers().text
  same = "a small green cross on a gray background"
  examples = _caption_examples([f"a red circle moves {d} over a navy background" if d else same
                                for d in ("left", None, "up", None, "down", None)])
  cache = EmbeddingCache(str(tmp_path / "cache"), encoder.model_id)
  tok = Tokenizers(video=tokenizers().video, text=encoder, text_cache=cache)
  _run(tmp_path / "out", ListSource(examples), tok)
  # Batches [0 1] [2 3] [4 5]: the repeated caption is encoded in the first only; 0, 2, 4 differ.
  assert (cache.misses, cache.hits) == (4, 2)
  rows = list(read_tokenized(str(tmp_path / "out")).as_numpy_iterator())
  direct = encoder.encode([e["caption"] for e in examples])
  assert direct.embeddings.shape[1:] == (64, TEXT_DIM)
  np.testing.assert_array_equal(np.stack([r["text_embeddings"] for r in rows]),
                                direct.embeddings.astype(np.float16).astype(np.float32))
  np.testing.assert_array_equal(np.stack([r["text_mask"] for r in rows]), direct.mask)
  for i, e in enumerate(examples):
    embeddings, mask, _ = cache.get(e["caption"])
    np.testing.assert_array_equal(embeddings, direct.embeddings[i])
    np.testing.assert_array_equal(mask, direct.mask[i])
  again = EmbeddingCache(str(tmp_path / "cache"), encoder.model_id)
  _run(tmp_path / "out2", ListSource(examples), Tokenizers(video=tokenizers().video,
                                                           text=encoder, text_cache=again))
  assert (again.misses, again.hits) == (0, 6)
  assert _shard_bytes(tmp_path / "out2") == _shard_bytes(tmp_path / "out")


@pytest.mark.parametrize("text_dtype", ["bfloat16", "float32"])
def test_text_embeddings_are_read_back_in_the_dtype_they_were_written(tmp_path, text_dtype):
  """TokenizeConfig.text_dtype sets the storage dtype and the manifest records it, so the reader
  decodes the bytes as that dtype (before, it always decoded float16: float32 rows came back with
  twice the values and the wrong shape)."""
  import ml_dtypes
  encoder = tokenizers().text
  examples = _caption_examples(["a red circle moves left over a navy background",
                                "a small green cross on a gray background"])
  tok = Tokenizers(video=tokenizers().video, text=encoder)
  manifest = _run(tmp_path, ListSource(examples), tok, text_dtype=text_dtype)
  assert load_manifest(str(tmp_path))["config"]["text_dtype"] == text_dtype
  rows = list(read_tokenized(str(tmp_path)).as_numpy_iterator())
  direct = encoder.encode([e["caption"] for e in examples]).embeddings
  stored = {"bfloat16": ml_dtypes.bfloat16, "float32": np.float32}[text_dtype]
  got = np.stack([r["text_embeddings"] for r in rows])
  assert got.dtype == np.float32 and got.shape == direct.shape
  np.testing.assert_array_equal(got, direct.astype(stored).astype(np.float32))
  assert manifest["num_examples"] == 2


def test_text_dtype_is_checked():
  with pytest.raises(ValueError, match="text_dtype='int8'"):
    TokenizeConfig(text_dtype="int8")
  from vp_jax.data.tokenize.features import text_storage_dtype
  assert text_storage_dtype({"config": {}}) == "float16"          # manifests before the setting
  with pytest.raises(ValueError, match="text_dtype='float64'"):
    text_storage_dtype({"config": {"text_dtype": "float64"}})
