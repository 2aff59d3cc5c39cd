"""Benchmark harness: load generator, baselines (raw model, naive FastAPI, LitServe), reports."""
