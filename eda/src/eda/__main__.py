from eda.cli import entry

entry()
