"""One process of a multi-process TextEncoder run (tests/test_text_multiprocess.py starts 2 through
launch/local_multiprocess.py): load the demo encoder from --encoder_dir, encode --texts_file's lines
over a mesh spanning every process's devices, save this process's (gathered) embeddings to
--out_dir/embeddings_<process>.npy and print `RESULT {json}`."""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vp_jax import distributed  # noqa: E402  (imports jax, runs nothing on it)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--encoder_dir", required=True)
  parser.add_argument("--texts_file", required=True)
  parser.add_argument("--out_dir", required=True)
  args = parser.parse_args(argv)
  initialized = distributed.maybe_initialize()   # before any other jax use

  import jax
  import numpy as np
  from vp_jax.text.encoder import TextEncoder

  with open(args.texts_file) as f:
    texts = f.read().splitlines()
  enc = TextEncoder.load(args.encoder_dir, batch_size=4)
  out = enc.encode(texts)
  np.save(os.path.join(args.out_dir, f"embeddings_{jax.process_index()}.npy"), out.embeddings)
  print("RESULT " + json.dumps({"process": jax.process_index(),
                                "process_count": jax.process_count(),
                                "device_count": jax.device_count(), "model_id": enc.model_id,
                                "real_tokens": int(out.mask.sum())}), flush=True)
  if initialized:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main()
