"""The store's own catalogue: model and validation (``model``), the SQLite store with its
change sequence, tombstones and quarantine (``store``), the register feed decisions (``feed``),
basket pricing (``pricing``, on a ``view``), and the error tree (``errors``)."""
