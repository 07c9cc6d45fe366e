"""The notebook executed by papermill against a real database, rendered, and read back."""

from __future__ import annotations

import subprocess
import sys

import nbformat

from eda.render import NOTEBOOK

SECTIONS = [
    "companydata: exploratory data analysis",
    "1. The tables",
    "2. feature_store: missing values and class balance",
    "3. Features, overall and by label",
    "4. Correlations",
    "5. How often clients' activity changes",
    "6. Monthly sales by store and location",
    "7. Model selection",
]


def render(db, output, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eda", "render", "--output", str(output), *args],
        env=db.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def pdf_text(path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_the_pdf_holds_every_section_the_figures_and_the_model_comparison(loaded, tmp_path) -> None:
    pdf = tmp_path / "out" / "eda.pdf"
    result = render(loaded, pdf, "-p", "sample_size=3000", "-p", "cv_folds=3")
    assert result.returncode == 0, result.stderr
    text = " ".join(pdf_text(pdf).split())
    for heading in SECTIONS:
        assert heading in text, heading
    for model in ("histogram gradient boosting", "logistic regression", "random forest"):
        assert model in text
    assert (
        "using 3,000" in text and "3-fold cross-validation on 3,000 clients" in text
    )  # the parameters reached the notebook
    assert "connected as ds_user@" in text
    images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True)
    figures = [line for line in images.stdout.splitlines()[2:] if line.split()[2] == "image"]
    assert len(figures) >= 7, images.stdout  # one per figure cell
    pages = {int(line.split()[0]) for line in figures}
    assert len(pages) >= 4  # figures spread through the document, not lumped or lost
    assert [p.name for p in pdf.parent.iterdir()] == ["eda.pdf"]  # no temporary file left behind


def test_a_broken_parameter_fails_naming_the_cell_and_the_parameter(loaded, tmp_path) -> None:
    pdf = tmp_path / "eda.pdf"
    result = render(loaded, pdf, "-p", "sample_size=-5")
    assert result.returncode == 1
    # Cell numbers are those of the executed notebook, where papermill adds the injected parameters.
    assert "eda.ipynb: cell 3 (execution 3) failed" in result.stderr
    assert "ValueError: parameter sample_size must be a whole number >= 0, not -5" in result.stderr
    assert not pdf.exists()


def test_a_failing_cell_keeps_the_previous_pdf(loaded, tmp_path) -> None:
    pdf = tmp_path / "eda.pdf"
    pdf.write_bytes(b"%PDF-previous")
    broken = nbformat.read(NOTEBOOK.open(), as_version=4)
    broken.cells.insert(3, nbformat.v4.new_code_cell("sql('SELECT * FROM no_such_table')"))
    notebook = tmp_path / "broken.ipynb"
    nbformat.write(broken, notebook)
    result = render(loaded, pdf, "--notebook", str(notebook))
    assert result.returncode == 1
    assert "broken.ipynb: cell 4 (execution 4) failed: DatabaseError" in result.stderr
    assert 'relation "no_such_table" does not exist' in result.stderr
    assert pdf.read_bytes() == b"%PDF-previous"


def test_the_parameters_cell_is_tagged_for_papermill() -> None:
    notebook = nbformat.read(NOTEBOOK.open(), as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ('database = DatabaseSettings.from_env("ds")', "sample_size", "cv_folds"):
        assert name in tagged[0].source
