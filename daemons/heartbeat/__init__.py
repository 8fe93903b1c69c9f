"""heartbeat: serves the host /health endpoint, pings dead-man's switches, watches peer hosts."""
