"""Trace format v1: schema, streaming writer, memory-mapped reader, workloads."""
