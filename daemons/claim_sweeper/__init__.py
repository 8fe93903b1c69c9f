"""claim-sweeper: finds expired Mission Control task leases, alerts #ops, optionally releases."""
