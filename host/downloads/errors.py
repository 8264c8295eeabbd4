"""What a pull can fail with. Every message says what to do; ``exit_code`` is the CLI's exit status."""

from __future__ import annotations


class PullError(Exception):
    """A pull failed; the message is written for the person who ran it."""

    exit_code = 1


class Offline(PullError):
    """Offline mode is on (``PLUGHOST_OFFLINE``, or ``HF_HUB_OFFLINE`` for Hugging Face)."""

    exit_code = 7


class Unreachable(PullError):
    """The hub did not answer (no network, DNS, timeout, 5xx)."""

    exit_code = 3


class NotOnHub(PullError):
    """The hub has no such repository or revision (404)."""

    exit_code = 4


class NotAuthorized(PullError):
    """The hub refused (401/403): a gated or private repository, or a bad token."""

    exit_code = 4


class VerifyFailed(PullError):
    """A file's size or hash differs from what the hub lists; the bad file was deleted."""

    exit_code = 5


class DiskFull(PullError):
    """Not enough free space for what is left to download (checked before anything is written)."""

    exit_code = 6


class Busy(PullError):
    """Another process is pulling the same repository right now."""

    exit_code = 8


class Cancelled(PullError):
    """The pull was cancelled (server shutdown, Ctrl-C); what was downloaded is kept for a resume."""

    exit_code = 130
