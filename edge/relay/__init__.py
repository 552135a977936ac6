"""The relay between the lanes and the shared peripherals (printers, drawers, scales,
customer displays): edge.relay.printer drives a network printer, edge.relay.printers runs the
store's printers for the hub."""
