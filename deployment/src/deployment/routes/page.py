"""GET /: a page with a form built from the served model's feature declaration."""

from __future__ import annotations

from flask import render_template
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.tag import Tag

from deployment.routes.context import services

bp = APIBlueprint("page", __name__, abp_tags=[Tag(name="page")])


@bp.get("/", responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}})
def page() -> str:
    """A page with a form to ask for a prediction."""
    context = services()
    model = context.holder.model
    return render_template(
        "index.html",
        version=model.version_ if model else None,
        features=list(context.holder.model_class.feature_schema),
        categories=model.known_categories() if model else {},
        example=context.requests.example,
        token_required=context.guard.required(),
    )
