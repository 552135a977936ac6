"""The HQ link: a second MQTT connection, from the hub to HQ's cloud broker.

HQ sends signed, versioned config documents and commands; the hub verifies them, applies a
config atomically (rolling back when the hub is not ready in time), runs commands, and
acknowledges every stage. It publishes its health as telemetry. docs/protocol.md §11 is the
contract.

Modules (this package imports nothing on import, so :mod:`edge.settings` can use
:mod:`edge.hq.settings`):

- :mod:`edge.hq.settings`   ``[hq]`` settings
- :mod:`edge.hq.errors`     the error tree
- :mod:`edge.hq.config`     pure: envelope, Ed25519 signatures, checks, the config document
- :mod:`edge.hq.telemetry`  pure: the health snapshot, the telemetry message, when to publish
- :mod:`edge.hq.topics`     the cloud topic tree
- :mod:`edge.hq.apply`      the Applier protocol and the built-in appliers
- :mod:`edge.hq.state`      the last processed versions and the config in force, on disk
- :mod:`edge.hq.handler`    one message in, acknowledgements out (config transaction, commands)
- :mod:`edge.hq.link`       the connection: reconnects, subscribes, publishes telemetry
"""
