"""``python -m fleet``: the ``fleet`` command (what ``fleet cutover apply`` runs for its own
``fleet units ...`` steps, with the same interpreter)."""

from fleet.entry import main

main()
