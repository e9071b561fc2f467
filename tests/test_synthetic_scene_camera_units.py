"""Scene.camera_velocity: the exact pan per camera label, and the rendered background moving by it
between frames (the scene keeps no camera position, so the check goes through rendered frames)."""
import numpy as np
import pytest

from vp_jax.data.synthetic.render import render
from vp_jax.data.synthetic.scene import CAMERA_SPEED, CAMERAS, Scene


# -- Scene.camera_velocity ------------------------------------------------------------------------
def _scene(camera):
  # Phases chosen so that no pixel centre lies on a checker cell edge (0.125-unit cells) at 25
  # pixels per unit, before or after a shift by whole pixels.
  return Scene(extent=(1.0, 1.0), background="gray", pattern="checker",
               pattern_phase=(0.013, 0.029), camera=camera, objects=())


@pytest.mark.parametrize("camera,velocity", [
    ("none", (0.0, 0.0)), ("left", (-0.12, 0.0)), ("right", (0.12, 0.0)), ("up", (0.0, -0.12)),
    ("down", (0.0, 0.12))])
def test_camera_velocity_per_label(camera, velocity):
  assert CAMERA_SPEED == 0.12
  got = _scene(camera).camera_velocity
  assert isinstance(got, tuple) and len(got) == 2
  assert got == pytest.approx(velocity, abs=1e-15)


def test_camera_velocity_covers_every_camera_label():
  speeds = {c: float(np.hypot(*_scene(c).camera_velocity)) for c in CAMERAS}
  assert speeds == pytest.approx({"none": 0.0, "left": 0.12, "right": 0.12, "up": 0.12,
                                  "down": 0.12})


@pytest.mark.parametrize("camera", ["left", "right", "up", "down"])
def test_background_moves_by_the_camera_velocity_between_frames(camera):
  # 25 px per unit at 1 fps: the camera moves 0.12 units = exactly 3 px per frame. Frame t shows
  # the world point that frame 0 showed at pixel + velocity * t (the finite difference of the
  # camera position), and the background's flow is the opposite of the camera's velocity.
  vx, vy = _scene(camera).camera_velocity
  frames, _, flow = render(_scene(camera), 3, 25, 25, fps=1.0)
  sx, sy = int(round(vx * 25)), int(round(vy * 25))
  assert abs(sx) + abs(sy) == 3
  for t in (1, 2):
    dx, dy = sx * t, sy * t
    # frames[t][y, x] == frames[0][y + dy, x + dx] wherever both are inside the frame.
    now = frames[t][max(-dy, 0):25 - max(dy, 0), max(-dx, 0):25 - max(dx, 0)]
    then = frames[0][max(dy, 0):25 + min(dy, 0), max(dx, 0):25 + min(dx, 0)]
    np.testing.assert_array_equal(now, then)
    wrong = frames[0][max(-dy, 0):25 - max(dy, 0), max(-dx, 0):25 - max(dx, 0)]
    assert np.any(now != wrong)                       # the frames do move
  np.testing.assert_allclose(flow[..., 0], -vx * 25, atol=1e-6)
  np.testing.assert_allclose(flow[..., 1], -vy * 25, atol=1e-6)


def test_background_is_still_without_a_camera():
  frames, _, flow = render(_scene("none"), 2, 25, 25, fps=1.0)
  np.testing.assert_array_equal(frames[1], frames[0])
  assert not np.any(flow)
