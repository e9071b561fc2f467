"""Worker of tests/test_onednn_conv.py's two-process test: one jax process of a 2-process CPU job
(launch/local_multiprocess.py) encodes and decodes tiny-MAGVIT clips on a mesh spanning both
processes, with oneDNN's convolutions and with XLA's, and prints one JSON line of what it saw."""
import json

from vp_jax import distributed

distributed.maybe_initialize()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from vp_jax.models.magvit import preset, synthetic  # noqa: E402
from vp_jax.models.magvit.tokenizer import create_tokenizer  # noqa: E402
from vp_jax.nn import onednn_conv  # noqa: E402
from vp_jax.tokenizers.video_tokenizer import VideoTokenizer  # noqa: E402

model = create_tokenizer(preset("tiny"), 0)
mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
clips = synthetic.moving_shapes_batch(0, 0, 4, 9, 16, 16)
out = {}
for convs in ("onednn", "xla"):
  tok = VideoTokenizer.from_module(model, mesh=mesh, cpu_convs=convs)
  ids = tok.encode(clips)
  out[convs] = (np.asarray(multihost_utils.process_allgather(ids, tiled=True)),
                np.asarray(multihost_utils.process_allgather(tok.decode(ids), tiled=True)))
print("RESULT " + json.dumps({
    "process": jax.process_index(), "processes": jax.process_count(),
    "available": onednn_conv.available(), "ids_shape": list(out["onednn"][0].shape),
    "ids_equal": bool((out["onednn"][0] == out["xla"][0]).all()),
    "frames_max_diff": float(np.abs(out["onednn"][1] - out["xla"][1]).max())}), flush=True)
