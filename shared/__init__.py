"""alai-fleet's shared library: config, logging, metrics, runtime, SQLite, notifications, Mission
Control. Nothing in it may import a daemon's runtime code (only section models)."""

__version__ = "0.1.0"
