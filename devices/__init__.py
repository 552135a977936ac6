"""Device codecs for the store's peripherals: bytes in, events out, bytes to send.

No I/O anywhere in this package (no asyncio, socket or serial import) and nothing from
``edge``: drivers in ``edge`` own the transports and use these codecs, and test emulators
use the same codecs from the device's side.

* ``escpos_status``: ESC/POS ``DLE EOT n`` real-time status requests and answers.
* ``scale``: the ``Reading`` every scale codec produces.
* ``scale_toledo``, ``scale_scp01``, ``scale_cas``: serial scale protocols, each a pure
  frame decoder plus a stream parser that never raises.
* ``display_dmd``: Epson DM-D customer display (2 × 20) encoder.
* ``errors``: ``FrameError`` and its stable codes.
"""
