"""How many distinct XLA programs a Figure-1 sweep compiles (``mvelab reproduce figure1``).

Every run of the sweep trains its seeds vmapped in one process (``sweep.run_job`` uses
one worker), so it compiles two programs: ``start`` (warm-up and first evaluation) and
``train_chunk`` (one evaluation interval). Two runs share a compiled program exactly when
the lowered StableHLO is the same (it is the key of the persistent compilation cache,
debug info excluded). This lowers every program of the sweep without compiling it and
counts the distinct ones.

    python benchmarks/count_programs.py [--env pendulum] [--preset default]
"""

from __future__ import annotations

import argparse
import hashlib

import jax
import jax.numpy as jnp

from mvelab import config as config_lib, program as T
from mvelab.experiments import reproduce, spec as spec_lib


def lowered_programs(cfg) -> dict:
  """``{"start": hash, "chunk": hash}`` of one run's vmapped programs."""
  programs = T.make_programs(cfg)
  keys = jnp.stack([jax.random.PRNGKey(cfg.seed + k) for k in range(cfg.num_seeds)])
  start_fn = jax.vmap(lambda k: T.start(programs, k))
  state = jax.eval_shape(start_fn, keys)[0]
  chunk_fn = jax.vmap(lambda s: T.train_chunk(programs, s))
  text = {"start": jax.jit(start_fn).lower(keys),
          "chunk": jax.jit(chunk_fn, donate_argnums=0).lower(state)}
  return {k: hashlib.sha256(v.as_text(debug_info=False).encode()).hexdigest()
          for k, v in text.items()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--env", default=None)
  parser.add_argument("--preset", default="default")
  args = parser.parse_args()
  spec = spec_lib.parse_spec(reproduce.figure1_spec(args.env, preset=args.preset))
  seen: dict = {}
  for run in spec.runs:
    for kind, h in lowered_programs(config_lib.resolve(run.config)).items():
      seen.setdefault((kind, h), []).append(run.name)
  starts = sum(k == "start" for k, _ in seen)
  print(f"{len(spec.runs)} runs, {2 * len(spec.runs)} programs lowered, {len(seen)} "
        f"distinct ({starts} start, {len(seen) - starts} train_chunk)")
  for (kind, _), names in sorted(seen.items()):
    if len(names) > 1:
      print(f"  shared {kind}: {', '.join(names)}")


if __name__ == "__main__":
  main()
