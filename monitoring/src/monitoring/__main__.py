from monitoring.cli import entry

entry()
