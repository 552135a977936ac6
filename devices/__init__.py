"""Device codecs for the store's peripherals: bytes in, events out, bytes to send.

No I/O anywhere in this package (no asyncio, socket or serial import) and nothing from
``edge``: drivers in ``edge`` own the transports and use these codecs, and test emulators
use the same codecs from the device's side.

* ``escpos_status``: ESC/POS ``DLE EOT n`` real-time status requests and answers.
* ``receipt``: a structured receipt encoded to ESC/POS with python-escpos (its Dummy printer).
* ``escpos_preview``: ESC/POS bytes executed as a printer would, into jobs and a preview PNG.
* ``scale``: the ``Reading`` every scale codec produces.
* ``scale_toledo``, ``scale_scp01``, ``scale_cas``, ``scale_magellan`` (Datalogic Magellan
  scanner-scale, single cable): serial scale protocols, each a pure
  frame decoder plus a stream parser that never raises.
* ``display_dmd``: Epson DM-D customer display: the encoder, and the display's side
  (``DmdDecoder``) for emulators.
* ``errors``: ``FrameError`` and its stable codes.
"""
