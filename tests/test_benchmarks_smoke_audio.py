"""Smoke tests of benchmarks/audio_tokenizer.py and torchref.py's SoundStream side: the clips, the
spec handed to the reference, `bench_jax`'s figures and `main` end to end, so the script does not
rot silently when the tokenizer it times changes (the video benchmark's are in
test_benchmarks_smoke_tokenizers.py).

Figures: the module's `time` is replaced by a scripted clock (tests/fake_clocks.py), so the medians
must equal the ones worked out by hand. audiolm-pytorch lives only in `.venv-torchref`: the
reference-venv test skips without it. Slow (left out of the default run): SoundStream `small`, the
smallest audio preset, takes ~30-40 s to build and compile on 2 busy cores (bench_jax and main).
"""
import json
import math

import jax
import numpy as np
import pytest

from fake_clocks import ScriptedClock, printed_floats
from tests.helpers import load_benchmark, reference_python


at = load_benchmark("audio_tokenizer")


def test_audio_clips_are_the_documented_input():
  wave = at.clips(2)
  assert wave.shape == (2, 34_000) and wave.dtype == np.float32 and at.SECONDS == 2.125
  assert np.abs(wave).max() <= 1 and 0.25 < wave.std() < 0.35       # 0.3 x N(0, 1), clipped
  assert (at.clips(2) == wave).all() and not (wave[0] == wave[1]).all()


def test_audio_bench_torch_spec_and_unavailable_reference(monkeypatch, tmp_path):
  from vp_jax.models.soundstream.config import preset
  seen = []

  def fake_reference(*args):
    seen.append(args)
    return "stub"

  monkeypatch.setattr(at, "run_reference", fake_reference)
  wave = np.zeros((1, 16), np.float32)
  assert at.bench_torch(preset("small"), wave, 5, 2, "/some/python") == "stub"
  (kind, spec, array, python), = seen
  assert (kind, python) == ("soundstream", "/some/python") and array is wave
  assert spec == {"channels": 8, "strides": [2, 4, 5, 8], "channel_mults": [2, 4, 8, 16],
                  "dilations": [1, 3, 9], "embed_dim": 64, "codebook_size": 1024,
                  "num_levels": 4, "sample_rate": 16_000, "repeats": 5, "threads": 2}
  json.dumps(spec)                                   # what run_reference hands over
  monkeypatch.undo()
  missing = str(tmp_path / "python")
  assert at.bench_torch(preset("small"), wave, 1, 1, missing) == \
      f"no interpreter at {missing} (make .venv-torchref/.installed)"


@pytest.mark.slow  # ~30-40 s: builds SoundStream `small` (with its discriminators) and compiles it
def test_audio_bench_jax_figures(monkeypatch):
  from flax import nnx
  from vp_jax.models.soundstream.config import preset
  from vp_jax.models.soundstream.model import SoundStream
  clock = ScriptedClock([0.5, 0.125, 0.25, 1.0, 0.75, 0.5])  # encode x 3, decode x 3: medians
  monkeypatch.setattr(at, "time", clock)
  r = at.bench_jax("small", at.clips(1), repeats=3)
  assert clock.done
  assert r["encode_s"] == 0.25 and r["decode_s"] == 0.75 and r["config"] == preset("small")
  # Codec parameters: the encoder's and decoder's, not the discriminators'.
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: SoundStream(preset("small"), rngs=nnx.Rngs(0)))
  count = lambda m: sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  assert r["params"] == count(model.encoder) + count(model.decoder) < count(model)


@pytest.mark.slow  # ~30-40 s, as above
def test_audio_tokenizer_main_end_to_end(capsys, tmp_path):
  missing = str(tmp_path / "python")
  r = at.main(["--batch", "1", "--repeats", "1", "--presets", "small", "--threads", "1",
               "--torch_python", missing])
  out = capsys.readouterr().out
  jax_r = r["small"]["jax"]
  assert set(r["small"]) == {"jax"}
  assert 0 < jax_r["encode_s"] < 60 and 0 < jax_r["decode_s"] < 60
  (line,) = [l for l in out.splitlines() if "vp_jax small" in l]
  enc_rt, enc_ms, dec_rt, dec_ms = printed_floats(
      r"([\d.]+)x(?: real time)? \(\s*([\d.]+) ms\)", line)
  assert enc_rt == pytest.approx(at.SECONDS / jax_r["encode_s"], abs=0.051)
  assert enc_ms == pytest.approx(jax_r["encode_s"] * 1e3, abs=0.051)
  assert dec_rt == pytest.approx(at.SECONDS / jax_r["decode_s"], abs=0.051)
  assert dec_ms == pytest.approx(jax_r["decode_s"] * 1e3, abs=0.051)
  assert printed_floats(r"\(([\d.]+)M codec params\)", line) == [round(jax_r["params"] / 1e6, 2)]
  assert f"audiolm-pytorch small: unavailable (no interpreter at {missing}" in out


def test_audio_bench_torch_in_the_reference_venv():
  """bench_torch runs torchref.bench_soundstream in the reference venv on our preset's layout."""
  python = reference_python()
  from vp_jax.models.soundstream.config import preset
  r = at.bench_torch(preset("small"), at.clips(1), 3, 1, python)
  assert isinstance(r, dict), r
  assert len(r["encode_all_s"]) == len(r["decode_all_s"]) == 3
  assert r["encode_s"] == sorted(r["encode_all_s"])[1]           # the median of 3
  assert r["decode_s"] == sorted(r["decode_all_s"])[1]
  assert 106 in r["codes_shape"] and 4 in r["codes_shape"]   # 34,000 // 320 frames x 4 levels
  assert r["wave_shape"][-1] == 106 * 320
  assert r["threads"] == 1 and r["params"] > 0 and r["encode_flops"] > 0
