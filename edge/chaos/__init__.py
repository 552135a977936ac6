"""The chaos suite (`make chaos`, `python -m edge.chaos`): a whole store under a randomized,
seeded schedule of faults (hub SIGKILLs, broker restarts, WAN flaps, cloud faults, a full
disk, lanes switched off and on, business rejections, a damaged outbox file), then the promise
checked: nothing acknowledged lost, nothing twice in the cloud, every parked item explained,
every register's catalogue equal to the hub's.

Modules: :mod:`~edge.chaos.schedule` (the seeded schedule, pure), :mod:`~edge.chaos.invariants`
(the checker, pure: records in, findings out), :mod:`~edge.chaos.harness` (the shells that run
the store and apply the faults), :mod:`~edge.chaos.report` (the table and the JSON summary).

Not part of the hub: nothing under ``edge/`` but this package imports it.
"""
