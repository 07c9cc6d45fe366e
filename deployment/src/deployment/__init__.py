"""The prediction API: Flask under gunicorn, serving the MLEModel that MODEL_CLASS names."""

__version__ = "0.1.0"
