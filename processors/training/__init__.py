"""Offline training scripts; not imported by the processors at run time."""
