"""Routing decisions and the math behind them; no web framework.

Three parts, each a package, imported one way (import-linter contracts in pyproject enforce it):

- `router.runtime`: what the gateway calls per request, pure and fast — the policy, the prompt
  and answer features, the learned scorer and its verifier, and the artifact loader (the one
  runtime module that reads a file, once at start-up).
- `router.capacity`: the planner — parameters, memory, KV cache, parallelism, latency and cost.
  Pure; used by `deployments/` at build time and by the runtime's priors.
- `router.offline`: outcome tables -> training, calibration, evaluation. It imports the runtime;
  the runtime never imports it.
"""
