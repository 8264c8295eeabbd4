"""Testing kit for plughost and its plugin authors.

- :mod:`host.testing.fakes`: deterministic fake backends per task that declare real specs
  and record their calls, plus :class:`~host.testing.fakes.FakePlugin` to register them;
- :mod:`host.testing.pytest_plugin`: fixtures (registered as a pytest plugin);
- :mod:`host.testing.tiny_models`: random-weight models of the real architectures, built offline.
"""
