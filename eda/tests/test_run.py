"""`python -m eda run`, the compose service: wait for feature_store, render, exit 0 (serving is the proxy's job)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest


@pytest.fixture
def tiny_notebook(tmp_path: Path) -> Path:
    """One quick cell: these tests are about the command's life cycle, not the analysis."""
    notebook = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        }
    )
    notebook.cells = [nbformat.v4.new_markdown_cell("# tiny"), nbformat.v4.new_code_cell("print('rendered')")]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(notebook, path)
    return path


def test_run_waits_for_feature_store_renders_and_exits_0(companydata, raw_data, tiny_notebook, tmp_path) -> None:
    pdf = tmp_path / "out" / "eda.pdf"
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "eda", "run", "--output", str(pdf), "--notebook", str(tiny_notebook)],
            env=companydata.env(EDA_WAIT_TIMEOUT="300"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "waiting: table feature_store" not in log.read_text():
            assert process.poll() is None, f"exited before feature_store existed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"never said it was waiting:\n{log.read_text()}"
            time.sleep(0.2)
        assert not pdf.exists()

        etl = subprocess.run(
            [sys.executable, "-m", "data_engineering", "etl"],
            env=companydata.env(RAW_DATA_DIR=str(raw_data)),
            capture_output=True,
            text=True,
        )
        assert etl.returncode == 0, etl.stderr
        # The next check (backoff: at most 30 s apart) finds the rows; then it renders and exits.
        assert process.wait(timeout=180) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert pdf.read_bytes().startswith(b"%PDF")
    assert "table feature_store is ready" in log.read_text()


def test_run_gives_up_after_the_wait_timeout_without_a_pdf(companydata, tiny_notebook, tmp_path) -> None:
    pdf = tmp_path / "eda.pdf"
    result = subprocess.run(
        [sys.executable, "-m", "eda", "run", "--output", str(pdf), "--notebook", str(tiny_notebook)],
        env=companydata.env(EDA_WAIT_TIMEOUT="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "has the ETL run?" in result.stderr
    assert not pdf.exists()


def test_there_is_no_serve_command_any_more() -> None:
    result = subprocess.run([sys.executable, "-m", "eda", "serve"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "invalid choice: 'serve'" in result.stderr
