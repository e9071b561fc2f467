"""Folder builders' shared pieces, one function at a time: which captions file is used
(`find_captions_file`), the rows it gives (`CaptionRow`), the bad-file policy and its report
(`SkipCounter`), and image decoding (`load_image`: exact centre crops, alpha on black, palette and
grey images, missing and corrupt files)."""
import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from vp_jax.data.builders.common import (BadExampleError, CaptionRow, SkipCounter,
                                         TooManySkippedError, find_captions_file, read_captions)
from vp_jax.data.builders.image_folder import load_image


# -- find_captions_file --------------------------------------------------------------------------
def test_find_captions_prefers_jsonl_then_csv(tmp_path):
  (tmp_path / "captions.csv").write_text("file,caption\n")
  assert find_captions_file(str(tmp_path)) == str(tmp_path / "captions.csv")
  (tmp_path / "captions.jsonl").write_text("")
  assert find_captions_file(str(tmp_path)) == str(tmp_path / "captions.jsonl")


def test_find_captions_explicit_relative_and_absolute(tmp_path):
  (tmp_path / "captions.jsonl").write_text("")
  (tmp_path / "meta").mkdir()
  (tmp_path / "meta" / "other.csv").write_text("")
  # An explicit name wins over the default file; a relative one is under source_dir.
  assert find_captions_file(str(tmp_path), "meta/other.csv") == str(tmp_path / "meta" / "other.csv")
  elsewhere = tmp_path / "elsewhere.jsonl"
  elsewhere.write_text("")
  assert find_captions_file(str(tmp_path / "meta"), str(elsewhere)) == str(elsewhere)


def test_find_captions_missing_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    find_captions_file(str(tmp_path))
  assert str(e.value) == f"{tmp_path}: no captions.jsonl or captions.csv (or pass captions=)."
  (tmp_path / "captions.jsonl").write_text("")
  with pytest.raises(FileNotFoundError) as e:
    find_captions_file(str(tmp_path), "nope.csv")
  assert str(e.value) == f"captions file {tmp_path / 'nope.csv'} does not exist."


# -- CaptionRow ----------------------------------------------------------------------------------
def test_caption_row_is_a_frozen_value():
  row = CaptionRow(file="/d/a.mp4", caption="a cat", audio=None, split="train", line=3)
  assert [f.name for f in dataclasses.fields(CaptionRow)] == ["file", "caption", "audio", "split",
                                                               "line"]
  assert row == CaptionRow("/d/a.mp4", "a cat", None, "train", 3)
  assert row != CaptionRow("/d/a.mp4", "a cat", None, "train", 4)
  assert len({row, CaptionRow("/d/a.mp4", "a cat", None, "train", 3)}) == 1
  with pytest.raises(dataclasses.FrozenInstanceError):
    row.caption = "a dog"


def test_caption_rows_from_jsonl_keep_physical_line_numbers(tmp_path):
  lines = ['{"file": "a.mp4", "caption": "  first  "}', "",
           '{"file": "sub/b.mp4", "caption": "second", "audio": "b.wav", "split": "validation"}',
           '{"file": "c.mp4", "audio": ""}']
  (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
  rows = read_captions(str(tmp_path))
  d = str(tmp_path)
  assert rows == [
      CaptionRow(os.path.join(d, "a.mp4"), "first", None, "train", 1),
      CaptionRow(os.path.join(d, "sub/b.mp4"), "second", os.path.join(d, "b.wav"), "validation", 3),
      CaptionRow(os.path.join(d, "c.mp4"), "", None, "train", 4),
  ]


# -- SkipCounter ---------------------------------------------------------------------------------
def test_skip_counter_validates_its_arguments():
  with pytest.raises(ValueError, match=r"on_error='ignore': expected one of \('raise', 'skip'\)"):
    SkipCounter("ignore")
  for bad in (-0.01, 1.5):
    with pytest.raises(ValueError, match=f"max_skip_fraction={bad}: must be in"):
      SkipCounter("skip", bad)
  assert SkipCounter("skip", 0.0).max_skip_fraction == 0.0
  assert SkipCounter("skip", 1.0).max_skip_fraction == 1.0


def test_skip_counter_raise_mode_raises_the_error_itself():
  counter = SkipCounter()
  assert counter.on_error == "raise" and counter.max_skip_fraction == 0.1
  err = BadExampleError("/d/x.mp4", "corrupt", "bad header")
  with pytest.raises(BadExampleError) as e:
    counter.handle(err)
  assert e.value is err and counter.skipped == []


def test_skip_counter_report_counts_by_reason_and_writes_it(tmp_path):
  counter = SkipCounter("skip", 0.25)
  counter.seen = 8
  for path, reason in (("/d/a", "corrupt"), ("/d/b", "missing_file"), ("/d/c", "corrupt")):
    counter.handle(BadExampleError(path, reason))
  expected = {"seen": 8, "skipped": 3, "by_reason": {"corrupt": 2, "missing_file": 1},
              "files": [{"file": "/d/a", "reason": "corrupt", "message": "/d/a: corrupt"},
                        {"file": "/d/b", "reason": "missing_file",
                         "message": "/d/b: missing_file"},
                        {"file": "/d/c", "reason": "corrupt", "message": "/d/c: corrupt"}]}
  assert counter.report() == expected
  path = counter.write(str(tmp_path / "new" / "dir"), "skipped-train.json")
  assert path == str(tmp_path / "new" / "dir" / "skipped-train.json")
  assert json.loads(open(path).read()) == expected
  assert os.path.basename(counter.write(str(tmp_path))) == "skipped.json"


def test_skip_counter_check_allows_exactly_the_fraction():
  counter = SkipCounter("skip", 0.1)
  counter.check("nothing seen")                   # 0 seen: never fails
  counter.seen = 10
  counter.handle(BadExampleError("/d/first.mp4", "too_short", "1.0 s"))
  counter.check("one of ten")                     # 1 <= 0.1 x 10
  counter.handle(BadExampleError("/d/second.mp4", "corrupt"))
  with pytest.raises(TooManySkippedError) as e:
    counter.check("Builder(x)")                   # 2 > 1
  assert str(e.value) == (
      "Builder(x): skipped 2 of 10 files (20.0% > max_skip_fraction 10.0%); reasons: "
      "{'too_short': 1, 'corrupt': 1}; first: /d/first.mp4: too_short (1.0 s)")
  counter.seen = 20
  counter.check("two of twenty")                  # 2 <= 0.1 x 20


# -- load_image ----------------------------------------------------------------------------------
def _random_rgb(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_load_image_same_size_is_exact(tmp_path):
  pixels = _random_rgb(12, 10)
  Image.fromarray(pixels).save(tmp_path / "a.png")
  out = load_image(str(tmp_path / "a.png"), (12, 10))
  assert out.dtype == np.uint8 and out.shape == (12, 10, 3) and out.flags["C_CONTIGUOUS"]
  np.testing.assert_array_equal(out, pixels)


def test_load_image_centre_crops_without_scaling_when_one_side_fits(tmp_path):
  # Landscape 8x16 into 8x8: scale 1, columns 4..11 kept.
  wide = _random_rgb(8, 16, seed=1)
  Image.fromarray(wide).save(tmp_path / "wide.png")
  np.testing.assert_array_equal(load_image(str(tmp_path / "wide.png"), (8, 8)), wide[:, 4:12])
  # Portrait 15x6 into 6x6: rows (15 - 6) // 2 = 4 .. 9 kept.
  tall = _random_rgb(15, 6, seed=2)
  Image.fromarray(tall).save(tmp_path / "tall.png")
  np.testing.assert_array_equal(load_image(str(tmp_path / "tall.png"), (6, 6)), tall[4:10])


def test_load_image_scales_to_cover_then_crops(tmp_path):
  # 20x40 into 10x10: scaled to 10x20 (cover), then columns 5..14. Left half red, right blue:
  # the crop's columns 0..4 come from the red half, 5..9 from the blue half (Lanczos-3 at scale
  # 1/2 reads 6 source pixels either side, so only columns 0, 1 and 8, 9 are pure).
  img = np.zeros((20, 40, 3), np.uint8)
  img[:, :20] = (200, 10, 10)
  img[:, 20:] = (10, 10, 200)
  Image.fromarray(img).save(tmp_path / "halves.png")
  out = load_image(str(tmp_path / "halves.png"), (10, 10)).astype(int)
  assert out.shape == (10, 10, 3)
  np.testing.assert_array_equal(out[:, :2], np.broadcast_to([200, 10, 10], (10, 2, 3)))
  np.testing.assert_array_equal(out[:, 8:], np.broadcast_to([10, 10, 200], (10, 2, 3)))
  assert np.all(out[:, 4, 0] > 150) and np.all(out[:, 4, 2] < 60)
  assert np.all(out[:, 5, 2] > 150) and np.all(out[:, 5, 0] < 60)
  # A constant image stays that constant through the Lanczos resize, up or down.
  Image.fromarray(np.full((6, 9, 3), (30, 60, 90), np.uint8)).save(tmp_path / "small.png")
  np.testing.assert_array_equal(load_image(str(tmp_path / "small.png"), (12, 12)),
                                np.broadcast_to([30, 60, 90], (12, 12, 3)))


def test_load_image_alpha_palette_and_grey(tmp_path):
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., :3] = (250, 120, 40)
  rgba[:2, :, 3] = 255        # top rows opaque, bottom rows fully transparent
  Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
  out = load_image(str(tmp_path / "alpha.png"), (4, 4))
  np.testing.assert_array_equal(out[:2], np.broadcast_to([250, 120, 40], (2, 4, 3)))
  np.testing.assert_array_equal(out[2:], 0)            # composited on black
  # Palette image whose index 1 is transparent.
  pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
  pal.putpalette([10, 200, 30, 90, 90, 90] + [0] * 762)
  pal.info["transparency"] = 1
  pal.save(tmp_path / "pal.png", transparency=1)
  out = load_image(str(tmp_path / "pal.png"), (2, 2))
  np.testing.assert_array_equal(out, [[[10, 200, 30], [0, 0, 0]], [[0, 0, 0], [10, 200, 30]]])
  grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
  Image.fromarray(grey, "L").save(tmp_path / "grey.png")
  np.testing.assert_array_equal(load_image(str(tmp_path / "grey.png"), (4, 4)),
                                np.repeat(grey[..., None], 3, -1))


def test_load_image_bad_files_name_the_reason(tmp_path):
  missing = str(tmp_path / "gone.png")
  with pytest.raises(BadExampleError) as e:
    load_image(missing, (8, 8))
  assert (e.value.path, e.value.reason) == (missing, "missing_file")
  assert str(e.value) == f"{missing}: missing_file (listed in the captions file but not found)"
  for name, data in (("junk.png", os.urandom(64)), ("empty.jpg", b""),
                     ("cut.png", None)):
    path = tmp_path / name
    if data is None:   # a valid PNG header, then nothing
      Image.fromarray(_random_rgb(16, 16)).save(path)
      path.write_bytes(path.read_bytes()[:60])
    else:
      path.write_bytes(data)
    with pytest.raises(BadExampleError) as e:
      load_image(str(path), (8, 8))
    assert (e.value.path, e.value.reason) == (str(path), "corrupt"), name
