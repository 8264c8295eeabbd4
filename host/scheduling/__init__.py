"""Admission, swapping and offloading of models: a pure policy and the scheduler applying it."""
