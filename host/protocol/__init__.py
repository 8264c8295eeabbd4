"""Wire formats: msgspec Structs matching the OpenAI-compatible API field for field.

Request structs tolerate unknown fields (clients send extras) and validate ranges; each
converts itself into a domain request with ``to_domain()``.
"""
