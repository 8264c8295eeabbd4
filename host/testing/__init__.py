"""Testing kit for plughost and its plugin authors.

- :mod:`host.testing.fakes`: deterministic fake backends per task that declare real specs
  and record their calls, plus :class:`~host.testing.fakes.FakePlugin` to register them;
- :mod:`host.testing.pytest_plugin`: fixtures (registered as a pytest plugin);
- :mod:`host.testing.server`: a real server in a thread;
- :mod:`host.testing.http` and :mod:`host.testing.anthropic`: checks of OpenAI's and Anthropic's
  error envelopes and streams.

Random-weight models of the real architectures are production code: :mod:`host.demo` and each
plugin's ``demo`` module.
"""
