"""A Dagster instance configured as the stack's, for tests and benchmarks.

The orchestration image's DAGSTER_HOME holds orchestration/deploy/dagster.yaml: storage in the
`dagster` database (the pooled dagster-postgres storages), run artefacts and compute logs under
/var/lib/dagster. Here the same file is used with a local cluster's `dagster` database and the
artefact directories moved under `home`, so an ordinary user can run it and nothing is left
outside the temporary directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from testkit.localdb import LocalCluster

DEPLOYED = Path(__file__).resolve().parents[3] / "orchestration" / "deploy" / "dagster.yaml"
IMAGE_STATE_DIR = "/var/lib/dagster"
DATABASE = "dagster"
# As docker-compose.yml sets it for the Dagster services.
EVENT_BATCH_SIZE = "200"


def prepare(home: Path, cluster: LocalCluster, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write `home`/dagster.yaml and return the variables a Dagster process needs to use it."""
    text = DEPLOYED.read_text()
    if IMAGE_STATE_DIR not in text:
        raise ValueError(f"{DEPLOYED} no longer keeps its artefacts under {IMAGE_STATE_DIR}: update {__name__}")
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(text.replace(IMAGE_STATE_DIR, str(home)))
    settings = cluster.settings("dagster", env)
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": settings.host,
        "DAGSTER_PG_PORT": str(settings.port),
        "DAGSTER_PG_USER": settings.user,
        "DAGSTER_PG_PASSWORD": settings.password,
        "DAGSTER_PG_DB": DATABASE,
        "DAGSTER_EVENT_BATCH_SIZE": EVENT_BATCH_SIZE,
    }
