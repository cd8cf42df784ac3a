"""Checkpoint readers and the canonical tensor form (installed as mbengine.converters)."""
