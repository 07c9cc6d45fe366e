from data_engineering.cli import entry

entry()
