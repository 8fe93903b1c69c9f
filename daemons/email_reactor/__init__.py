"""email-reactor: triages the strategic inbox into Mission Control tasks and Slack pushes."""
