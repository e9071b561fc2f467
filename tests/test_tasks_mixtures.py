"""Mixtures: Table 2 rows uniform over their columns, the two-stage pretraining schedule switching
at 25% of the steps, rates over many draws matching, mixtures lacking a task refused with the
reason; and the AGD iterator: unpadded single-task batches, token-budget batch sizes, exact resume."""
import collections
import re

import numpy as np
import pytest
import seqio
from tasks_data import tokenized

from vp_jax.data.agd import AGDIterator, batch_rows
from vp_jax.data.mixing import RateSchedule, Stage, draw_task, schedule_for
from vp_jax.models.prefix_lm.config import SMALL_VOCAB
from vp_jax.sequence.vocab import Special
from vp_jax.tasks import videopoet_mixtures as vm
from vp_jax.tasks.videopoet import Registered
from vp_jax.train.run_lm import task_datasets

F = "_128x128_17"


@pytest.fixture(scope="module")
def reg():
  return vm.register_videopoet(tokenized(), vocab=SMALL_VOCAB, prefix="m", overwrite=True)


def test_table2_rows_are_uniform_over_their_columns(reg):
  assert set(reg.registered()) == {f"m_{r}" for r in vm.ROWS} | {"m_pretrain"}
  all_rates = schedule_for("m_all").rates_at(0, 1)
  sixth = 1 / 6
  expected = {"m_img_text_to_image": sixth, f"m_vid_text_to_video{F}": sixth,
              f"m_vid_unconditional_video{F}": sixth, f"m_vid_future_prediction{F}": sixth,
              f"m_vid_inpainting{F}": sixth / 2, f"m_vid_outpainting{F}": sixth / 2,
              f"m_vid_audio_video_continuation{F}": sixth}
  assert all_rates == pytest.approx(expected)
  assert schedule_for("m_t2v").rates_at(0, 1) == {f"m_vid_text_to_video{F}": 1.0}
  assert schedule_for("m_t2v_i").rates_at(0, 1) == pytest.approx(
      {"m_img_text_to_image": 0.5, f"m_vid_text_to_video{F}": 0.5})
  ssl = schedule_for("m_ssl").rates_at(0, 1)
  assert ssl[f"m_vid_unconditional_video{F}"] == pytest.approx(0.25)
  assert ssl[f"m_vid_inpainting{F}"] == pytest.approx(0.125)
  assert len(schedule_for("m_no_t2i").rates_at(0, 1)) == 6
  assert schedule_for("m_adapt_v2a").tasks == (f"m_vid_video_to_audio{F}",)
  # The fixed-rate rows are seqio Mixtures too.
  mix = seqio.get_mixture_or_task("m_all")
  assert mix.get_rate(seqio.get_mixture_or_task("m_img_text_to_image")) == pytest.approx(sixth)


VID = Registered("vid", False, tasks={"text_to_video": ["vid_t2v_a", "vid_t2v_b"],
                                      "inpainting": ["vid_inp"], "outpainting": ["vid_outp"]},
                 skipped={"text_to_image": "needs image data", "video_to_audio": "no audio"})
IMG = Registered("img", True, tasks={"text_to_image": ["img_t2i"]})


def test_column_rates_split_columns_then_kinds_then_tasks():
  rates = vm.column_rates([("text_to_image",), ("text_to_video",), vm.PAINTING], [VID, IMG],
                          total=0.6)
  # 0.2 per column; text_to_video's 0.2 over its two tasks; Painting's 0.2 over its two kinds.
  assert rates == pytest.approx({"img_t2i": 0.2, "vid_t2v_a": 0.1, "vid_t2v_b": 0.1,
                                 "vid_inp": 0.1, "vid_outp": 0.1})
  assert sum(rates.values()) == pytest.approx(0.6)
  assert vm.column_rates([("text_to_video",)], [IMG, VID]) == {"vid_t2v_a": 0.5, "vid_t2v_b": 0.5}
  # A kind registered by two datasets splits its share between their tasks.
  other = Registered("vid2", False, tasks={"text_to_video": ["vid2_t2v"]})
  assert vm.column_rates([("text_to_video",)], [VID, other], total=3.0) == pytest.approx(
      {"vid_t2v_a": 1.0, "vid_t2v_b": 1.0, "vid2_t2v": 1.0})
  assert vm.column_rates([], [VID]) == {}


def test_column_rates_accumulate_a_task_listed_under_two_kinds():
  shared = Registered("s", False, tasks={"inpainting": ["both", "inp"], "outpainting": ["both"]})
  assert vm.column_rates([vm.PAINTING], [shared]) == pytest.approx({"both": 0.75, "inp": 0.25})
  rates = vm.column_rates([("inpainting",), ("outpainting",), ("inpainting",)], [shared], 0.9)
  # Columns of 0.3: inpainting twice (0.15 per task each time), outpainting once (0.3 to "both").
  assert rates == pytest.approx({"both": 0.6, "inp": 0.3})
  assert sum(rates.values()) == pytest.approx(0.9)


def test_column_rates_missing_kind_names_it_and_each_datasets_reason():
  expected = ("no task registered for 'video_to_audio' (per dataset: {'vid': 'no audio', "
              "'img': 'not requested'}).")
  with pytest.raises(vm.MissingTasks, match=re.escape(expected)):
    vm.column_rates([("text_to_video",), ("video_to_audio",)], [VID, IMG])
  with pytest.raises(vm.MissingTasks, match=re.escape("'text_to_image' (per dataset: {'vid': "
                                                      "'needs image data'})")):
    vm.column_rates([("text_to_image",)], [VID])
  assert issubclass(vm.MissingTasks, ValueError)
  with pytest.raises(ValueError, match=re.escape("'inpainting' (per dataset: {})")):
    vm.column_rates([vm.PAINTING], [])


def test_pretraining_schedule_switches_at_a_quarter(reg):
  sched = schedule_for("m_pretrain")
  total = 1000
  assert sched.stage_index(249, total) == 0 and sched.stage_index(250, total) == 1
  first, second = sched.rates_at(0, total), sched.rates_at(999, total)
  assert first["m_img_text_to_image"] == pytest.approx(0.9)
  assert second["m_img_text_to_image"] == pytest.approx(0.1)
  video = [t for t in first if t != "m_img_text_to_image"]
  assert len(video) == 11   # 10 video kinds, each a column; stylization has 2 variants
  assert first[f"m_vid_text_to_video{F}"] == pytest.approx(0.1 / 10)
  assert second[f"m_vid_stylization_first_frame{F}"] == pytest.approx(0.9 / 10 / 2)
  # Each stage is also a seqio Mixture with that stage's fixed rates.
  stage1 = seqio.get_mixture_or_task("m_pretrain_stage1")
  assert stage1.get_rate(seqio.get_mixture_or_task("m_img_text_to_image")) == pytest.approx(0.1)
  # Draws: image share 0.9 before step 250, 0.1 after (4,000 draws per stage: +-0.02 is > 4 sd).
  total = 8000
  draws = [draw_task(sched, s, total, seed=3) for s in range(total)]
  image = np.array([d == "m_img_text_to_image" for d in draws])
  assert abs(image[:2000].mean() - 0.9) < 0.02 and abs(image[2000:].mean() - 0.1) < 0.02


def test_draw_rates_match_the_configured_rates(reg):
  sched = schedule_for("m_all")
  n = 30_000
  counts = collections.Counter(draw_task(sched, s, n, seed=0) for s in range(n))
  for task, rate in sched.rates_at(0, n).items():
    sd = np.sqrt(rate * (1 - rate) / n)
    assert abs(counts[task] / n - rate) < 4 * sd, (task, counts[task] / n, rate)
  # Deterministic in (seed, step), different for another seed.
  assert [draw_task(sched, s, n, 0) for s in range(50)] == [draw_task(sched, s, n, 0)
                                                           for s in range(50)]
  assert [draw_task(sched, s, n, 0) for s in range(50)] != [draw_task(sched, s, n, 1)
                                                           for s in range(50)]


def test_mixtures_without_their_tasks_are_not_registered():
  out = vm.register_videopoet({"vid": tokenized()["vid"]}, vocab=SMALL_VOCAB, prefix="m2",
                              overwrite=True)
  assert "text_to_image" in out.mixtures["m2_t2v_i"] and "needs image data" in \
      out.mixtures["m2_t2v_i"]
  assert "text_to_image" in out.mixtures["m2_pretrain"]
  assert out.mixtures["m2_ssl"] == "registered"
  with pytest.raises(ValueError, match="neither a registered schedule"):
    schedule_for("m2_t2v_i")


def test_schedule_validation():
  with pytest.raises(ValueError, match="start at 0.0"):
    RateSchedule((Stage(0.5, {"a": 1.0}),))
  with pytest.raises(ValueError, match="increase"):
    RateSchedule((Stage(0.0, {"a": 1.0}), Stage(1.0, {"a": 1.0})))
  with pytest.raises(ValueError, match="positive sum"):
    RateSchedule((Stage(0.0, {"a": 0.0}),))


def _agd(name, **kw):
  args = dict(total_steps=100, seed=1, batch_size=2)
  args.update(kw)
  return AGDIterator(schedule_for(name), task_datasets("train", shuffle=True, seed=1), **args)


def test_agd_batches_are_unpadded_single_task_and_resume_exactly(reg):
  it = _agd("m_t2v_i")
  batches = [next(it) for _ in range(10)]
  for b in batches:
    assert b["tokens"].shape[0] == 2 and not np.any(b["tokens"] == Special.PAD)
    assert len({tuple(r) for r in b["tokens"][:, :2]}) == 1           # one task per batch
  assert {b["tokens"].shape[1] for b in batches} == {86, 152}          # image, video lengths
  stats = it.stats()
  assert stats["padding_ratio"] == 0.0 and sum(stats["batches"].values()) == 10
  # Resume at step 4 from the saved state: the same 6 batches as the uninterrupted run.
  ref = _agd("m_t2v_i")
  for _ in range(4):
    next(ref)
  state = ref.get_state()
  assert state["step"] == 4 and sum(state["taken"].values()) == 4
  resumed = _agd("m_t2v_i")
  resumed.set_state(state)
  for b in batches[4:]:
    got = next(resumed)
    assert set(got) == set(b)
    for k in b:
      np.testing.assert_array_equal(got[k], b[k])
  with pytest.raises(ValueError, match="seed"):
    _agd("m_t2v_i", seed=2).set_state(state)
  with pytest.raises(ValueError, match="no 'step'"):
    resumed.set_state({"index": 3})


def test_agd_token_budget_gives_short_sequences_more_rows(reg):
  it = _agd("m_t2v_i", batch_size=None, tokens_per_batch=700, batch_multiple=2)
  rows = {}
  for _ in range(8):
    b = next(it)
    rows[b["tokens"].shape[1]] = b["tokens"].shape[0]
  assert rows == {86: 8, 152: 4}
  assert batch_rows(152, batch_size=None, tokens_per_batch=700, batch_multiple=2) == 4
  with pytest.raises(ValueError, match="holds no"):
    batch_rows(800, batch_size=None, tokens_per_batch=700)
  with pytest.raises(ValueError, match="exactly one"):
    _agd("m_t2v_i", tokens_per_batch=700)


def test_padding_benchmark_figures():
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "agd_padding.py"
  spec = importlib.util.spec_from_file_location("bench_agd_padding", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = bench.main()
  mean_all = (326 + 1352 + 1286 + 1354 + 1782) / 6 + 2634 / 6
  assert out["all"] == pytest.approx(1 - mean_all / 2634)
  assert out["pretrain_stage0"] > out["all"] > out["pretrain_stage1"] > 0.3
