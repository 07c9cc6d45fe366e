"""The prediction API: Flask under gunicorn, serving the latest data_science model."""

__version__ = "0.1.0"
