"""blueprint-watchdog: nightly blueprint/ZAKON liveness scan and the ZAKON registry gate."""
