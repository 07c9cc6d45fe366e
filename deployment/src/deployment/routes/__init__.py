"""The API's blueprints, one per concern: predictions, operations (health, readiness,
metrics, model, OpenAPI), and the page."""
