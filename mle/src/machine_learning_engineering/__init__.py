"""Platform layer shared by every package: database settings, connections and retries."""

__version__ = "0.1.0"
