"""Synthetic scene geometry, one function at a time: `reflect` (hand-computed reflections and bounce
counts), `object_state` (hand-computed trajectories, spin and summed bounces per axis) and
`sample_scene` (labels consistent with the motion, probabilities at their extremes, bounces where
the sampler aims them, the same scene at any resolution)."""
import numpy as np
import pytest

from vp_jax.data.synthetic.scene import (BACKGROUNDS, CAMERAS, COLOURS, DIRECTIONS, PATTERNS,
                                         SHAPES, SIZES, SPEEDS, ObjectSpec, Scene, SceneConfig,
                                         object_state, reflect, sample_scene)

DURATION = 17 / 8        # a 17-frame clip at 8 fps


# -- reflect -------------------------------------------------------------------------------------
@pytest.mark.parametrize("p,pos,count", [
    (0.0, 0.0, 0), (0.25, 0.25, 0), (1.0, 1.0, 1), (1.25, 0.75, 1), (2.5, 0.5, 2),
    (3.0, 1.0, 3), (-0.25, 0.25, 1), (-1.5, 0.5, 2)])
def test_reflect_unit_interval(p, pos, count):
  got_pos, got_count = reflect(np.array(p), 0.0, 1.0)
  assert float(got_pos) == pytest.approx(pos, abs=1e-12)
  assert int(got_count) == count and got_count.dtype == np.int64


def test_reflect_offset_interval_and_shapes():
  # [0.1, 0.6]: 0.8 reflects off 0.6 to 0.4; 1.45 off 0.6 (-> -0.25) then off 0.1 to 0.45;
  # -0.3 reflects off 0.1 to 0.5.
  p = np.array([[0.35, 0.8], [1.45, -0.3]])
  pos, count = reflect(p, 0.1, 0.6)
  assert pos.shape == (2, 2) and count.shape == (2, 2)
  np.testing.assert_allclose(pos, [[0.35, 0.4], [0.45, 0.5]], atol=1e-12)
  np.testing.assert_array_equal(count, [[0, 1], [2, 1]])


def test_reflect_is_continuous_and_counts_each_wall_crossing():
  lo, hi = 0.2, 0.7
  p = np.linspace(-2.0, 3.0, 5001)
  pos, count = reflect(p, lo, hi)
  assert pos.min() >= lo - 1e-12 and pos.max() <= hi + 1e-12
  assert np.max(np.abs(np.diff(pos))) <= np.diff(p)[0] + 1e-12     # moves no faster than p
  # Going right from 0.2 (count 0 in [0.2, 0.7)), the count grows by one at each wall.
  right = p >= lo
  expected = np.floor((p[right] - lo) / 0.5).astype(np.int64)
  np.testing.assert_array_equal(count[right], expected)
  assert count[0] == 5          # -2.0 is 2.2 left of 0.2: walls at 0.2, -0.3, ..., -1.8


# -- object_state --------------------------------------------------------------------------------
def _obj(**kw):
  spec = dict(shape="square", colour="red", size="medium", direction="right", speed="fast",
              rotation="clockwise", start=(0.5, 0.3), velocity=(0.3, 0.0), angle0=10.0)
  spec.update(kw)
  return ObjectSpec(**spec)


def _scene(extent=(1.0, 1.0)):
  return Scene(extent=extent, background="navy", pattern="plain", pattern_phase=(0.0, 0.0),
               camera="none", objects=())


def test_object_state_hand_computed_bounce_off_the_right_edge():
  # Medium radius 0.15: x in [0.15, 0.85]. From 0.5 at 0.3 units/s the centre hits 0.85 at
  # t = 7/6 s and comes back: 0.6 at t = 2, 0.3 at t = 3.
  centre, angle, bounces = object_state(_obj(), _scene(), np.array([0.0, 1.0, 2.0, 3.0]))
  assert centre.shape == (4, 2)
  np.testing.assert_allclose(centre[:, 0], [0.5, 0.8, 0.6, 0.3], atol=1e-12)
  np.testing.assert_allclose(centre[:, 1], 0.3)
  np.testing.assert_allclose(angle, [10.0, 100.0, 190.0, 280.0])       # 90 deg/s clockwise
  np.testing.assert_array_equal(bounces, [0, 0, 1, 1])
  assert bounces.dtype == np.int64


def test_object_state_sums_bounces_over_both_axes_in_a_portrait_frame():
  # Large radius 0.21 in a 1 x 1.75 frame: x in [0.21, 0.79], y in [0.21, 1.54]. After 1 s at
  # (0.3, 0.3): x hits 0.79 after 0.09 and is back at 0.58; y hits 1.54 after 0.04 and is at 1.28.
  obj = _obj(size="large", start=(0.7, 1.5), velocity=(0.3, 0.3), rotation="counterclockwise",
             angle0=45.0)
  centre, angle, bounces = object_state(obj, _scene((1.0, 1.75)), np.array([0.0, 1.0]))
  np.testing.assert_allclose(centre, [[0.7, 1.5], [0.58, 1.28]], atol=1e-12)
  np.testing.assert_allclose(angle, [45.0, -45.0])
  np.testing.assert_array_equal(bounces, [0, 2])


def test_object_state_still_object_keeps_its_place_for_any_time_shape():
  obj = _obj(direction="none", speed="none", rotation="none", velocity=(0.0, 0.0),
             start=(0.25, 0.75), angle0=30.0)
  t = np.arange(6.0).reshape(2, 3)
  centre, angle, bounces = object_state(obj, _scene(), t)
  assert centre.shape == (2, 3, 2) and angle.shape == (2, 3) and bounces.shape == (2, 3)
  np.testing.assert_array_equal(centre[..., 0], 0.25)
  np.testing.assert_array_equal(centre[..., 1], 0.75)
  np.testing.assert_array_equal(angle, 30.0)
  np.testing.assert_array_equal(bounces, 0)
  assert bounces.dtype == np.int64


# -- sample_scene --------------------------------------------------------------------------------
def _scenes(config, n=300, **kw):
  args = dict(height=32, width=32, duration_s=DURATION)
  args.update(kw)
  return [sample_scene(np.random.default_rng(seed), config, **args) for seed in range(n)]


def test_sample_scene_labels_agree_with_geometry():
  counts, cameras = set(), set()
  for scene in _scenes(SceneConfig(max_objects=3)):
    assert scene.extent == (1.0, 1.0)
    assert scene.background in BACKGROUNDS and scene.pattern in PATTERNS
    assert all(0.0 <= p < 1.0 for p in scene.pattern_phase)
    assert scene.camera in CAMERAS
    if scene.camera != "none":
      assert scene.pattern != "plain"               # a moving camera needs a textured background
    cameras.add(scene.camera)
    counts.add(len(scene.objects))
    assert len({o.colour for o in scene.objects}) == len(scene.objects)   # distinct colours
    for o in scene.objects:
      assert o.shape in SHAPES and o.colour in COLOURS and o.size in SIZES
      r = SIZES[o.size]
      assert r <= o.start[0] <= 1.0 - r and r <= o.start[1] <= 1.0 - r
      if o.direction == "none":
        assert o.speed == "none" and o.velocity == (0.0, 0.0)
      else:
        dx, dy = DIRECTIONS[o.direction]
        assert o.velocity == (dx * SPEEDS[o.speed], dy * SPEEDS[o.speed])
      if o.shape == "circle":
        assert o.rotation == "none" and o.angle0 == 0.0
      else:
        assert 0.0 <= o.angle0 < 90.0
  assert counts == {1, 2, 3}
  assert cameras == set(CAMERAS)


def test_sample_scene_units_do_not_depend_on_resolution():
  for seed in range(20):
    a = sample_scene(np.random.default_rng(seed), SceneConfig(max_objects=2), height=128,
                     width=128, duration_s=DURATION)
    b = sample_scene(np.random.default_rng(seed), SceneConfig(max_objects=2), height=32,
                     width=32, duration_s=DURATION)
    assert a == b
  portrait = sample_scene(np.random.default_rng(0), SceneConfig(), height=224, width=128,
                          duration_s=DURATION)
  assert portrait.extent == (1.0, 1.75)


def test_sample_scene_still_and_extreme_probabilities():
  always = SceneConfig(max_objects=2, p_still=0.0, p_rotate=1.0, p_camera=1.0, p_pattern=0.0)
  for scene in _scenes(always, n=50):
    assert scene.camera != "none" and scene.pattern != "plain"
    assert all(o.direction != "none" for o in scene.objects)
    assert all(o.rotation != "none" for o in scene.objects if o.shape != "circle")
  for scene in _scenes(always, n=50, still=True):
    assert scene.camera == "none"
    assert all(o.direction == "none" and o.velocity == (0.0, 0.0) and o.rotation == "none"
               for o in scene.objects)
  never = SceneConfig(max_objects=2, p_still=1.0, p_rotate=0.0, p_camera=0.0, p_pattern=0.0)
  for scene in _scenes(never, n=50):
    assert scene.camera == "none" and scene.pattern == "plain"
    assert all(o.direction == "none" and o.rotation == "none" for o in scene.objects)


def test_sample_scene_aimed_bounces_land_in_the_middle_half_of_the_clip():
  config = SceneConfig(max_objects=2, p_still=0.0, p_bounce=1.0)
  for scene in _scenes(config, n=150):
    for o in scene.objects:
      before = object_state(o, scene, np.array(0.25 * DURATION * (1 - 1e-9)))[2]
      after = object_state(o, scene, np.array(0.75 * DURATION))[2]
      assert int(before) == 0 and int(after) >= 1, o


def test_sample_scene_without_aim_bounces_only_when_unavoidable():
  # Travel in 17/8 s: slow 0.32 units, fast 0.6375. Free span 1 - 2r: small 0.8, medium 0.7,
  # large 0.58. Only a fast large object cannot cross the frame without a bounce.
  config = SceneConfig(max_objects=2, p_still=0.0, p_bounce=0.0)
  seen = set()
  for scene in _scenes(config, n=200):
    for o in scene.objects:
      bounces = int(object_state(o, scene, np.array(DURATION))[2])
      forced = (o.speed, o.size) == ("fast", "large")
      seen.add(forced)
      if forced:
        first = object_state(o, scene, np.array(0.25 * DURATION * (1 - 1e-9)))[2]
        assert bounces >= 1 and int(first) == 0, o
      else:
        assert bounces == 0, o
  assert seen == {True, False}
