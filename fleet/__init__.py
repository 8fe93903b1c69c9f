"""The ``fleet`` app: the only code that names every daemon.

It holds the registry (``fleet.registry``), the root config composed from the daemons'
sections and its cross-daemon rules (``fleet.config``), the ``fleet`` command
(``fleet.entry``, ``fleet.cli``), and the unit/plist/Prometheus/Grafana generation commands. The
library (``shared/``) and the daemons (``daemons/<name>/``) never import it.
"""
