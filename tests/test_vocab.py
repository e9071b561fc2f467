"""The unified vocabulary: the paper's sizes and offsets, code <-> id round trips, range errors."""
import numpy as np
import pytest

from vp_jax.sequence.vocab import (FORMAT_TOKENS, NUM_SPECIAL, PAPER, Special, Vocabulary,
                                   VocabularyError)


def test_paper_sizes_and_offsets():
  assert NUM_SPECIAL == 256
  assert PAPER.visual_range() == (256, 256 + 262_144)
  assert PAPER.audio_offset == 262_400
  assert [PAPER.audio_range(l) for l in range(4)] == [
      (262_400, 263_424), (263_424, 264_448), (264_448, 265_472), (265_472, 266_496)]
  assert PAPER.size == 266_496


def test_special_tokens_are_unique_and_below_256():
  ids = [int(t) for t in Special]
  assert len(ids) == len(set(ids)) and max(ids) < NUM_SPECIAL
  for name in ("BOS", "TASK_VIDEO", "BOT_I", "EOT_I", "BOV_I", "EOV_I", "BOA_I", "EOA_I", "RES",
               "BOV_O", "EOV_O", "BOA_O", "EOA_O", "EOS"):
    assert hasattr(Special, name)
  assert len(set(FORMAT_TOKENS.values())) == 4


def test_visual_round_trip_and_errors():
  codes = np.array([[0, 1, 262_143]])
  ids = PAPER.visual_to_ids(codes)
  np.testing.assert_array_equal(ids, [[256, 257, 262_399]])
  np.testing.assert_array_equal(PAPER.ids_to_visual(ids), codes)
  with pytest.raises(VocabularyError, match=r"visual codes must lie in \[0, 262144\)"):
    PAPER.visual_to_ids([262_144])
  with pytest.raises(VocabularyError, match="visual ids"):
    PAPER.ids_to_visual([255])
  with pytest.raises(VocabularyError, match="integers"):
    PAPER.visual_to_ids(np.array([1.0]))


def test_audio_level_major_round_trip():
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 1024, (2, 4, 106))
  ids = PAPER.audio_to_ids(codes)
  assert ids.shape == (2, 424)
  # Level-major: the first 106 ids are level 0, the next 106 level 1, ...
  np.testing.assert_array_equal(ids[:, :106], codes[:, 0] + 262_400)
  np.testing.assert_array_equal(ids[:, 106:212], codes[:, 1] + 262_400 + 1024)
  np.testing.assert_array_equal(PAPER.ids_to_audio(ids), codes)
  np.testing.assert_array_equal(PAPER.modality_of(ids[0, ::106]), [2, 3, 4, 5])


def test_audio_ids_in_the_wrong_level_are_refused():
  ids = PAPER.audio_to_ids(np.zeros((4, 3), np.int64))
  ids[0] = PAPER.audio_range(1)[0]          # a level-1 id where level 0 belongs
  with pytest.raises(VocabularyError, match="level 0"):
    PAPER.ids_to_audio(ids)
  with pytest.raises(VocabularyError, match=r"\[\.\.\., 4, T\]"):
    PAPER.audio_to_ids(np.zeros((3, 5), np.int64))
  with pytest.raises(VocabularyError, match="multiple of 4"):
    PAPER.ids_to_audio(np.full((7,), 262_400))


def test_small_vocabulary_keeps_the_layout():
  v = Vocabulary(visual_codes=1024, audio_levels=4, audio_codes_per_level=256)
  assert v.visual_range() == (256, 1280) and v.audio_range(3) == (1280 + 768, 1280 + 1024)
  assert v.size == 256 + 1024 + 1024
  with pytest.raises(VocabularyError):
    Vocabulary(visual_codes=0)
