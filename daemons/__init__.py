"""The fleet's daemons, one package each (``daemons/<name>/``, with a ``manifest.py``).

This package root holds no code: a daemon imports only ``shared/`` and itself, never another
daemon, and the registry that names them all is the app's (``fleet/registry.py``).
"""
