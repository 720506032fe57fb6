"""The daemon (``syncer run``): a layer beside the CLI, above sync, store and ims — the
scheduler, this replica's membership among the others, signals and the composition of the HTTP
server. Nothing below imports it."""

from syncer.daemon.service import run_daemon

__all__ = ["run_daemon"]
