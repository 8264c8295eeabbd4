"""Building blocks for backends: batching, the chat base, footprint arithmetic, weights, limits.

Only plugins (and the host's tests) use these; the server never imports them except to resolve
weights and size the demo profile. ``torch_utils`` imports torch: import it inside ``load``.
"""
