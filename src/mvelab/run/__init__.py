"""The host side of a run, one question per module.

* :mod:`~mvelab.run.rundir`: what a run directory holds (layout, config.json,
  metrics.csv in (env_steps, seed) order, summary.json) and how it is read back.
* :mod:`~mvelab.run.hostloop`: one compiled, vmapped program per seed group, stepped one
  evaluation at a time, with its checkpoints.
* :mod:`~mvelab.run.executables`: a group's compiled programs stored across processes,
  so that an identical run skips tracing (CLI only).
* :mod:`~mvelab.run.workers`: seed groups spread over worker processes.
* :mod:`~mvelab.run.progress`: what is printed while and after a run trains.
* :mod:`~mvelab.run.signals`: SIGINT/SIGTERM turned into an orderly stop.

:func:`mvelab.runner.train` composes them.
"""
