"""Execute the EDA notebook with papermill and render the executed notebook to PDF.

PDF through HTML: nbconvert writes the executed notebook as HTML with the figures inline, and
WeasyPrint lays that out as PDF. Both run offline, in the image as on a laptop: no browser, no
LaTeX, and no URL is fetched (anything not inline is refused, so a template that links a CDN
cannot make rendering depend on the network).
"""

from __future__ import annotations

import logging
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import nbformat
import papermill
import weasyprint
from nbconvert import HTMLExporter
from papermill.exceptions import PapermillExecutionError
from pygments.formatters import HtmlFormatter
from weasyprint.urls import URLFetcher

from eda.errors import EdaError

log = logging.getLogger(__name__)
# WeasyPrint narrates every step and every browser-only CSS rule of nbconvert's template.
logging.getLogger("weasyprint").setLevel(logging.ERROR)
logging.getLogger("fontTools").setLevel(logging.WARNING)

NOTEBOOK = resources.files("eda") / "notebooks" / "eda.ipynb"
TITLE = "companydata: exploratory data analysis"


class RenderError(EdaError, RuntimeError):
    """The notebook failed or could not be rendered; the message names the cell."""


def execute(notebook: Path, executed: Path, parameters: dict[str, Any]) -> nbformat.NotebookNode:
    """Run every cell against the database (the kernel inherits our environment)."""
    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(executed.parent),
        )
    except PapermillExecutionError as exc:
        first_line = next((line for line in exc.source.splitlines() if line.strip()), "")
        raise RenderError(
            f"{notebook.name}: cell {exc.cell_index} (execution {exc.exec_count}) failed: "
            f"{exc.ename}: {exc.evalue}\n  the cell begins: {first_line}"
        ) from None
    node: nbformat.NotebookNode = nbformat.read(executed, as_version=4)  # type: ignore[no-untyped-call]  # nbformat leaves read() unannotated
    return node


def to_pdf(notebook: nbformat.NotebookNode, pdf: Path) -> None:
    """Write the PDF atomically: readers (the proxy serving it) never see half a file."""
    # "basic" is markup without the browser template's flexbox layout, which WeasyPrint
    # cannot split across pages; print.css and Pygments' colours style it for paper.
    exporter = HTMLExporter(template_name="basic")  # type: ignore[no-untyped-call]  # traitlets __init__, unannotated
    body, _ = exporter.from_notebook_node(notebook)
    html = f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{TITLE}</title></head><body>{body}</body></html>'
    css = (resources.files("eda") / "print.css").read_text() + HtmlFormatter().get_style_defs(".highlight")
    offline = URLFetcher(allowed_protocols={"data"})  # inline figures only, never the network
    document = weasyprint.HTML(string=html, url_fetcher=offline, base_url=str(pdf.parent))
    pdf.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=pdf.parent, prefix=f".{pdf.name}.", suffix=".tmp")
    os.close(fd)
    try:
        document.write_pdf(tmp, stylesheets=[weasyprint.CSS(string=css)])
        os.chmod(tmp, 0o644)
        os.replace(tmp, pdf)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(pdf: Path, parameters: dict[str, Any], notebook: Path | None = None) -> Path:
    """Execute the notebook and write its PDF to `pdf`."""
    with resources.as_file(NOTEBOOK) as default, tempfile.TemporaryDirectory(prefix="eda-") as work:
        source = notebook or default
        executed = execute(source, Path(work) / "executed.ipynb", parameters)
        to_pdf(executed, pdf)
    log.info("rendered %s (%d KB)", pdf, pdf.stat().st_size // 1024)
    return pdf
