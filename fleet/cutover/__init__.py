"""``fleet cutover``: switch a host from the legacy Node/bash jobs to the fleet. ``survey``
finds what stands in the way (legacy LaunchAgents and systemd units, listeners on the fleet's
ports, ops-watchdog.json, the old litestream.yml, secrets), ``plan`` orders the switch with a
rollback per step, ``apply`` performs it through one ``CommandRunner`` (docs/cutover.md).
"""
