"""Cloud connectors: the hub's outbound side (outbox → ERP, catalogue ← ERP).

One sub-package per cloud; each owns its error tree and exposes a single I/O seam
(an HTTP session and base URL) so tests can point it at the simulator in ``edge/sim``.
"""
