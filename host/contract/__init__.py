"""The plugin contract: declarations, domain requests, backend protocols, hooks and the error vocabulary.

Plugin authors import these through :mod:`host.sdk`; the host's own layers import the modules.
"""
