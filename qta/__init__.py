"""Layer 0: the QTA world in plain Python — no Django, no database, no app (import-linter holds it so).

The output protocol and its parser, metrics, the token budget, checkpoint loading, the inference engine and its
model clients (local transformers, OpenAI-compatible servers) with their retry policy, the tiny offline models,
image checks, the sample, seed and training-file readers, snapshot records and the training runner (run as a child
process: `python -m qta.runner`), synthetic and release-shaped data. The apps (`annotation`, `guardmodel`, `jury`,
`training`, `generation`) build on it; the training child and the benchmarks use it without Django.
"""
