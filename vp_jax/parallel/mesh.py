"""The device mesh over (data, fsdp, tensor), built from a config.

Every model kind trains over the same three mesh axes: `data` (pure data parallelism, parameters
replicated), `fsdp` (data parallelism with parameters and optimizer state sharded, ZeRO-3 style) and
`tensor` (tensor/model parallelism inside layers). A size of -1 means "all remaining devices".
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Sizes of the (data, fsdp, tensor) mesh axes; at most one of them may be -1."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def shape(self, num_devices: int) -> tuple[int, int, int]:
    """Resolves -1 against `num_devices`; raises if the sizes cannot tile the devices."""
    sizes = (self.data, self.fsdp, self.tensor)
    for name, size in zip(MESH_AXES, sizes):
      if size == 0 or size < -1:
        raise ValueError(f"MeshConfig.{name}={size}: sizes must be positive or -1.")
    if sizes.count(-1) > 1:
      raise ValueError(f"MeshConfig{sizes}: at most one axis may be -1.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if num_devices % known:
        raise ValueError(
            f"MeshConfig{sizes}: {num_devices} devices are not divisible by {known}.")
      sizes = tuple(num_devices // known if s == -1 else s for s in sizes)
    if math.prod(sizes) != num_devices:
      raise ValueError(
          f"MeshConfig{sizes} covers {math.prod(sizes)} devices but {num_devices} are in use.")
    return sizes  # type: ignore[return-value]


def make_mesh(config: MeshConfig = MeshConfig(),
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """Builds the (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes).

  With the default device list the mesh is laid out by `jax.make_mesh` (topology-aware on TPU);
  an explicit device list (tests restoring onto 4 or 1 of 8 devices) is reshaped in order.
  """
  if devices is None:
    shape = config.shape(jax.device_count())
    return jax.make_mesh(shape, MESH_AXES,
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
  devices = list(devices)
  shape = config.shape(len(devices))
  return jax.sharding.Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES,
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
