"""Text-embedding throughput of vp_jax's TextEncoder, and against HF transformers' PyTorch encoder.

Why: the offline tokenization job embeds every caption of a corpus with T5-XL and generation embeds
prompts; this prints captions/s for a preset (random T5-scheme weights: throughput does not depend
on their values) at the paper's 64 tokens, and, with --torch, the same weights through HF
`T5EncoderModel` in the same process (ratio = vp_jax / PyTorch, same inputs, same thread budget).
It also prints the max |difference| of the two outputs as a parity check at this size.

Timing: one warm-up call (compilation), then `--repeats` calls of `encode_ids` on `--num_texts`
captions of the synthetic dataset (padded to 64 tokens), best wall time; PyTorch likewise under
`torch.inference_mode()` with the same batch size.

Run:
  python benchmarks/text_encoder.py                                   # t5-v1_1-small, float32
  python benchmarks/text_encoder.py --preset t5-v1_1-base --torch
  python benchmarks/text_encoder.py --preset t5-v1_1-xl --dtype bfloat16 --num_texts 256
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import Sequence

import numpy as np

from vp_jax.text.config import PRESETS, T5EncoderConfig, get_config
from vp_jax.text.demo import demo_config, train_sentencepiece, training_captions
from vp_jax.text.encoder import TextEncoder
from vp_jax.text.model import init_params
from vp_jax.text.tokenizer import Tokenizer


def _best(fn, repeats: int) -> float:
  best = math.inf
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def run(cfg: T5EncoderConfig, *, num_texts: int = 64, batch_size: int = 32, repeats: int = 3,
        torch_ref: bool = False, seed: int = 0) -> dict:
  """Times TextEncoder (and optionally HF PyTorch) on `num_texts` captions; returns the figures."""
  captions = training_captions()
  tok = Tokenizer(train_sentencepiece(captions))
  params = init_params(cfg, seed)
  enc = TextEncoder(cfg, params, tok, batch_size=batch_size)
  tokens = tok.encode((captions * (1 + num_texts // len(captions)))[:num_texts])
  out = enc.encode_ids(tokens.ids, tokens.mask)  # warm-up: compiles
  seconds = _best(lambda: enc.encode_ids(tokens.ids, tokens.mask), repeats)
  result = {"preset": cfg.name, "dtype": cfg.dtype, "params": cfg.num_params(),
            "num_texts": num_texts, "batch_size": enc.batch_size,
            "real_tokens_per_text": float(tokens.mask.sum(1).mean()),
            "seconds": seconds, "texts_per_s": num_texts / seconds}
  if torch_ref:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel

    from vp_jax.text import convert_hf  # pylint: disable=import-outside-toplevel
    hf_cfg = transformers.T5Config(**{k: v for k, v in cfg.to_hf_config().items()
                                      if k not in ("architectures", "vp_jax_name")})
    hf_cfg._attn_implementation = "eager"  # pylint: disable=protected-access
    model = transformers.T5EncoderModel(hf_cfg).eval()
    state = {k: torch.from_numpy(v) for k, v in convert_hf.to_hf_arrays(params, cfg).items()}
    state["encoder.embed_tokens.weight"] = state["shared.weight"]
    model.load_state_dict(state, strict=True)
    if cfg.dtype == "bfloat16":
      model = model.to(torch.bfloat16)
    ids = torch.tensor(tokens.ids, dtype=torch.long)
    mask = torch.tensor(tokens.mask.astype(np.int64))

    def torch_encode():
      with torch.inference_mode():
        return torch.cat([model(input_ids=ids[i:i + batch_size],
                                attention_mask=mask[i:i + batch_size]).last_hidden_state
                          for i in range(0, len(ids), batch_size)]).float().numpy()
    ref = torch_encode()
    torch_seconds = _best(torch_encode, repeats)
    real = tokens.mask
    result.update(torch_seconds=torch_seconds, torch_texts_per_s=num_texts / torch_seconds,
                  speed_ratio=torch_seconds / seconds,
                  max_abs_diff=float(np.abs(out[real] - ref[real]).max()))
  return result


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="t5-v1_1-small",
                      help=f"one of {sorted(PRESETS)} or 'demo'")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--num_texts", type=int, default=64)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--torch", action="store_true", help="also time HF transformers (PyTorch)")
  args = parser.parse_args(argv)
  if args.preset == "demo":
    cfg = dataclasses.replace(demo_config(640), dtype=args.dtype, param_dtype=args.dtype)
  else:
    cfg = get_config(args.preset, dtype=args.dtype, param_dtype=args.dtype)
  result = run(cfg, num_texts=args.num_texts, batch_size=args.batch_size, repeats=args.repeats,
               torch_ref=args.torch)
  print(f"{result['preset']} ({result['params'] / 1e6:.1f}M encoder params, {result['dtype']}): "
        f"{result['texts_per_s']:.1f} captions/s at 64 tokens "
        f"(batch {result['batch_size']}, {result['num_texts']} captions in "
        f"{result['seconds']:.3f} s)")
  if "torch_seconds" in result:
    print(f"HF transformers PyTorch: {result['torch_texts_per_s']:.1f} captions/s; "
          f"vp_jax / PyTorch speed ratio {result['speed_ratio']:.2f}; "
          f"max |diff| at real tokens {result['max_abs_diff']:.2e}")
  return result


if __name__ == "__main__":
  main()
