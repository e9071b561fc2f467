"""Multi-process start-up configuration: the VP_JAX_* variables parsed into
`jax.distributed.initialize` arguments, every malformed or partial set rejected by name, and the
launcher's per-process environment (the live multi-process runs are tests/test_multiprocess.py)."""
import importlib.util
import os
import socket

import pytest

from vp_jax import distributed as D

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launcher():
  spec = importlib.util.spec_from_file_location(
      "local_multiprocess", os.path.join(REPO, "launch", "local_multiprocess.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _env(**kw):
  base = {D.COORDINATOR: "10.0.0.1:1234", D.NUM_PROCESSES: "4", D.PROCESS_ID: "3"}
  base.update(kw)
  return {k: v for k, v in base.items() if v is not None}


def test_read_env_parses_the_explicit_set():
  assert D.read_env({}) is None
  assert D.read_env({"PATH": "/bin", D.COORDINATOR: "  "}) is None        # blank = unset
  assert D.read_env(_env()) == dict(coordinator_address="10.0.0.1:1234", num_processes=4,
                                    process_id=3, local_devices=None)
  assert D.read_env(_env(**{D.LOCAL_DEVICES: " 2 ", D.COORDINATOR: "localhost:08080"})) == dict(
      coordinator_address="localhost:8080", num_processes=4, process_id=3, local_devices=2)


@pytest.mark.parametrize("env,match", [
    ({D.LOCAL_DEVICES: "2"}, "VP_JAX_LOCAL_DEVICES is set but"),
    (_env(**{D.PROCESS_ID: None}), "VP_JAX_PROCESS_ID missing"),
    (_env(**{D.NUM_PROCESSES: "two"}), "VP_JAX_NUM_PROCESSES='two' is not an integer"),
    (_env(**{D.NUM_PROCESSES: "0"}), "VP_JAX_NUM_PROCESSES=0 must be >= 1"),
    (_env(**{D.PROCESS_ID: "-1"}), "VP_JAX_PROCESS_ID=-1 must be >= 0"),
    (_env(**{D.PROCESS_ID: "4"}), "VP_JAX_PROCESS_ID=4 must be < VP_JAX_NUM_PROCESSES=4"),
    (_env(**{D.COORDINATOR: "1234"}), "must be host:port"),
    (_env(**{D.COORDINATOR: "host:70000"}), "port 70000 is out of range"),
    (_env(**{D.COORDINATOR: "host:x"}), "port='x' is not an integer"),
    (_env(**{D.LOCAL_DEVICES: "0"}), "VP_JAX_LOCAL_DEVICES=0 must be >= 1"),
])
def test_read_env_errors_name_the_variable(env, match):
  with pytest.raises(D.DistributedConfigError, match=match):
    D.read_env(env)


def test_auto_flag():
  assert D._auto({}) is False
  assert D._auto({D.AUTO: "Yes"}) is True and D._auto({D.AUTO: "off"}) is False
  with pytest.raises(D.DistributedConfigError, match="VP_JAX_AUTO_DISTRIBUTED='maybe'"):
    D._auto({D.AUTO: "maybe"})


def test_maybe_initialize_rejects_both_modes_before_touching_jax(monkeypatch):
  for name, value in {**_env(), D.AUTO: "1"}.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(D.DistributedConfigError, match="not both"):
    D.maybe_initialize()
  for name in (*_env(), D.AUTO):
    monkeypatch.delenv(name)
  assert D.maybe_initialize() is False                # no variables: single process, no-op


def test_launcher_process_env_round_trips_through_read_env():
  launcher = _launcher()
  port = launcher.free_port()
  assert 0 < port < 65536
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", port))                       # it was free
  env = launcher.process_env({"KEEP": "1", D.AUTO: "1"}, port=port, num_processes=3,
                             process_id=1, local_devices=2)
  assert env["KEEP"] == "1" and D.AUTO not in env and env["JAX_PLATFORMS"] == "cpu"
  assert D.read_env(env) == dict(coordinator_address=f"localhost:{port}", num_processes=3,
                                 process_id=1, local_devices=2)
