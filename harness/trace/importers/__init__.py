"""Importers: recorded text traces (ftrace, QEMU) to trace format v1."""
