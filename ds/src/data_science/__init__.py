"""The customer label model and its training job."""

__version__ = "0.1.0"
