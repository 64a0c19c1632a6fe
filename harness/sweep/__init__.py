"""Sweeps: a spec of what to run, executors that run it, a store that keeps it."""
