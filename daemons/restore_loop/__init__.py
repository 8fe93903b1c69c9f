"""restore-loop: keeps the standby's SQLite copies fresh from Litestream replicas."""
