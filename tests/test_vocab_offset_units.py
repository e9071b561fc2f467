"""Vocabulary.visual_offset: the first id after the 256 special tokens, and the layout around it."""
import numpy as np

from vp_jax.models.prefix_lm.config import SMALL_VOCAB
from vp_jax.sequence.vocab import NUM_SPECIAL, PAPER, Special, Vocabulary


# -- Vocabulary.visual_offset ---------------------------------------------------------------------
def test_visual_offset_is_the_first_id_after_the_256_special_tokens():
  assert NUM_SPECIAL == 256 and PAPER.visual_offset == 256
  assert max(int(t) for t in Special) < PAPER.visual_offset              # no special id above
  for vocab in (PAPER, SMALL_VOCAB, Vocabulary(visual_codes=3, audio_levels=1,
                                               audio_codes_per_level=2)):
    off = vocab.visual_offset
    assert off == 256                                    # independent of the modality sizes
    assert vocab.visual_range() == (256, 256 + vocab.visual_codes)
    assert vocab.audio_offset == off + vocab.visual_codes
    np.testing.assert_array_equal(vocab.modality_of([off - 1, off, off + vocab.visual_codes - 1]),
                                  [0, 1, 1])
    assert int(vocab.visual_to_ids(np.array(0))) == off
    assert int(vocab.ids_to_visual(np.array(off + 2))) == 2
  # The paper's layout: 256 specials + 2^18 visual + 4 x 1024 audio = 266,496 ids.
  assert PAPER.visual_offset + PAPER.visual_codes + 4 * 1024 == PAPER.size == 266_496
