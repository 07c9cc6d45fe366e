# Every image of the stack, and the test image, from one file. Build context: the repository root.
#
#   target     image (compose service)            runs
#   etl        <project>-etl (etl, preflight)     the ETL job; also the preflight check
#   training   <project>-model-training            the training job: saves a version to /models
#   api        <project>-api                       gunicorn serving the champion from /models (:5000)
#   eda        <project>-eda                       the EDA notebook, rendered to /srv/eda/eda.pdf
#   proxy      <project>-proxy                     nginx in front of the API (:8080) and the EDA (:8081)
#   orchestration <project>-orchestration          Dagster: dagster-webserver (:3000) and dagster-daemon
#              (dagster-webserver, dagster-daemon)    (with the drift monitor, companydata-monitor)
#   monitoring <project>-monitoring-ui            Evidently's UI on the drift reports' workspace (:8085)
#   test       companydata-test (make test)       the whole test suite, with its system packages
#
# docker compose builds the service targets; `make test` builds `test` when the machine lacks the
# test suite's system packages. Base images: python:3.11-slim only (never pulled by digest).
#
# Each service image holds one venv, /opt/venv, with exactly the locked versions (uv.lock) of its
# package and their dependencies, no test tools, no uv and no download cache: uv runs in a build
# stage, and its cache is a BuildKit cache mount, shared by the builds but never part of an image.
# Within a service's build stage the locked dependencies are installed before its source is
# copied, so a source change rebuilds only the small last layer.

# ---------------------------------------------------------------------------------------------
# base: what every image shares. (The images that apt-get install something end with apt-get clean:
# not every python:3.11-slim drops the downloaded packages by itself.)
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# builder: uv (the version the root pyproject.toml requires, as make install uses) and the
# workspace's manifests. The service build stages below start here.
FROM base AS builder
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_CACHE_DIR=/root/.cache/uv
RUN pip install --quiet uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY mle/pyproject.toml mle/
COPY de/pyproject.toml de/
COPY ds/pyproject.toml ds/
COPY deployment/pyproject.toml deployment/
COPY eda/pyproject.toml eda/

# sources: every package's manifest, README and src/, as the service builds install them. Copied
# into a build stage after its locked dependencies, so a source change rebuilds only the last,
# small layer of each service.
FROM scratch AS sources
COPY mle/pyproject.toml mle/README.md /src/mle/
COPY mle/src /src/mle/src
COPY de/pyproject.toml de/README.md /src/de/
COPY de/src /src/de/src
COPY ds/pyproject.toml ds/README.md /src/ds/
COPY ds/src /src/ds/src
COPY deployment/pyproject.toml deployment/README.md /src/deployment/
COPY deployment/src /src/deployment/src
COPY eda/pyproject.toml eda/README.md /src/eda/
COPY eda/src /src/eda/src

# runtime: the base of the Python services' final images (their venv comes from a build stage).
FROM base AS runtime
ENV PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------------------------------------
# etl: loads the raw files into companydata and builds feature_store, then exits. The preflight
# service runs its check in this image too (it holds machine_learning_engineering).
FROM builder AS etl-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package data_engineering --no-install-workspace
COPY --from=sources /src /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package data_engineering --no-editable

FROM runtime AS etl
ENV RAW_DATA_DIR=/data/raw
RUN useradd --create-home --uid 10001 etl \
 && mkdir -p /data/raw && chown etl:etl /data/raw
COPY --from=etl-build /opt/venv /opt/venv
USER etl
WORKDIR /home/etl
CMD ["companydata-etl", "etl"]

# ---------------------------------------------------------------------------------------------
# training: waits for feature_store, trains, evaluates, saves a version to /models.
FROM builder AS training-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package data_science --no-install-workspace
COPY --from=sources /src /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package data_science --no-editable

FROM runtime AS training
ENV MODEL_DIR=/models \
    OMP_NUM_THREADS=2
RUN useradd --create-home --uid 10001 trainer \
 && mkdir -p /models && chown trainer:trainer /models
COPY --from=training-build /opt/venv /opt/venv
USER trainer
WORKDIR /home/trainer
CMD ["companydata-train"]

# ---------------------------------------------------------------------------------------------
# api: gunicorn serving the champion model version from the read-only /models. Reached through
# the proxy, which publishes it; this container publishes nothing. data_science is installed as
# the model plugin (a dependency of deployment).
FROM builder AS api-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package deployment --no-install-workspace
COPY --from=sources /src /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package deployment --no-editable

FROM runtime AS api
ENV MODEL_DIR=/models \
    PREDICTION_SPOOL_DIR=/var/spool/predictions \
    OMP_NUM_THREADS=1
# The spool directory belongs to the api user: a new named volume mounted on it takes over
# that owner, so the API can write its spool there.
RUN useradd --create-home --uid 10002 api \
 && mkdir -p /var/spool/predictions && chown api:api /var/spool/predictions
COPY --from=api-build /opt/venv /opt/venv
USER api
WORKDIR /home/api
EXPOSE 5000
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:5000/ready', timeout=2).status != 200)"
CMD ["gunicorn", "-c", "python:deployment.gunicorn_conf", "deployment.app:create_app()"]

# ---------------------------------------------------------------------------------------------
# eda: waits for feature_store, executes the notebook against companydata as ds_user, renders it
# to /srv/eda/eda.pdf (the eda-report volume, served by the proxy) and exits.
FROM builder AS eda-build
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package eda --no-install-workspace
COPY --from=sources /src /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package eda --no-editable

FROM runtime AS eda
ENV EDA_OUTPUT=/srv/eda/eda.pdf \
    MPLCONFIGDIR=/tmp/matplotlib \
    JUPYTER_RUNTIME_DIR=/tmp/jupyter \
    IPYTHONDIR=/tmp/ipython \
    OMP_NUM_THREADS=2
# WeasyPrint lays the PDF out with Pango; DejaVu is the report's font. No browser, no LaTeX.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10003 eda \
 && mkdir -p /srv/eda && chown eda:eda /srv/eda
COPY --from=eda-build /opt/venv /opt/venv
USER eda
WORKDIR /home/eda
CMD ["companydata-eda", "run"]

# ---------------------------------------------------------------------------------------------
# proxy: Debian's nginx in front of the API (:8080) and the EDA report (:8081), as an
# unprivileged user; deployment/proxy/entrypoint.py (standard-library Python) renders the
# configuration from nginx.conf.template and the environment.
FROM base AS proxy
ENV NGINX_PREFIX=/tmp/nginx
# /srv/eda is the mount point of the eda-report volume. Docker gives a new named volume the
# owner of the directory it is first mounted on, and this container may mount it before the
# eda container does: so the directory belongs to the eda user (uid 10003) here as well.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
 && useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --uid 10004 nginx \
 && mkdir -p /srv/eda && chown 10003:10003 /srv/eda
COPY deployment/proxy/nginx.conf.template deployment/proxy/entrypoint.py /etc/proxy/
USER nginx
EXPOSE 8080 8081
# nginx's graceful stop: finish the requests in progress, then exit.
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8081/health', timeout=2).status != 200)"
ENTRYPOINT ["python", "/etc/proxy/entrypoint.py"]

# ---------------------------------------------------------------------------------------------
# orchestration: Dagster (the orchestration package: every stage as assets, checks, schedules and
# sensors). One image, two compose services: dagster-webserver (the UI and GraphQL API, :3000) and
# dagster-daemon (schedules, sensors, the run queue). The daemon runs the stages itself, in-process
# in run subprocesses, under their own database roles; so this image holds the ETL, training and
# scoring code, and writes /data/raw (the ETL's default dataset) and /models (new versions).
# Dagster's own records live in PostgreSQL (the `dagster` database): see dagster.yaml.
# The builder and sources stages do not carry the orchestration package (the other images must not
# rebuild when it changes): its manifest and source are copied here, and the drift monitor's
# (monitoring: Evidently; the drift_report asset runs it, so does `make monitor`).
FROM builder AS orchestration-build
COPY orchestration/pyproject.toml orchestration/
COPY monitoring/pyproject.toml monitoring/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package orchestration --no-install-workspace
COPY --from=sources /src /src
COPY orchestration/pyproject.toml orchestration/README.md /src/orchestration/
COPY orchestration/src /src/orchestration/src
COPY monitoring/pyproject.toml monitoring/README.md /src/monitoring/
COPY monitoring/src /src/monitoring/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package orchestration --no-editable

FROM runtime AS orchestration
# uid 10001, as the etl and training images: the raw-data and models volumes belong to that uid
# (whichever container mounts a new volume first gives it its directory's owner, hence the chowns).
# DAGSTER_HOME (dagster.yaml, workspace.yaml) belongs to root: the services read it, never write it.
# /srv/reports (the reports volume): the drift reports' HTML and the Evidently workspace.
ENV DAGSTER_HOME=/opt/dagster/home \
    RAW_DATA_DIR=/data/raw \
    MODEL_DIR=/models \
    REPORTS_DIR=/srv/reports/html \
    MONITORING_WORKSPACE=/srv/reports/workspace \
    OMP_NUM_THREADS=2
RUN useradd --create-home --uid 10001 dagster \
 && mkdir -p /opt/dagster/home /data/raw /models /var/lib/dagster /srv/reports/html /srv/reports/workspace \
 && chown dagster:dagster /data/raw /models /var/lib/dagster /srv/reports /srv/reports/html /srv/reports/workspace
COPY --from=orchestration-build /opt/venv /opt/venv
COPY orchestration/deploy/dagster.yaml orchestration/deploy/workspace.yaml /opt/dagster/home/
USER dagster
WORKDIR /opt/dagster/home
EXPOSE 3000
# The compose services set their command (and the webserver's healthcheck, /server_info).
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "workspace.yaml"]

# ---------------------------------------------------------------------------------------------
# monitoring: Evidently's UI (companydata-monitor ui, :8085) on the Evidently workspace the
# orchestrator's drift_report writes into the reports volume: the dashboard over time and every
# report. Only the monitoring package and its locked dependencies (Evidently, with
# machine_learning_engineering); it reads the volume, mounted read-only, and writes nothing.
FROM builder AS monitoring-build
COPY monitoring/pyproject.toml monitoring/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package monitoring --no-install-workspace
COPY --from=sources /src /src
COPY monitoring/pyproject.toml monitoring/README.md /src/monitoring/
COPY monitoring/src /src/monitoring/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package monitoring --no-editable

FROM runtime AS monitoring
# /srv/reports (the reports volume) and its two directories belong to uid 10001, the orchestrator's
# user, which writes them: a new volume takes the owner of the directory it is first mounted on,
# and this container may mount it first. The UI runs as its own user, which only reads.
ENV MONITORING_WORKSPACE=/srv/reports/workspace
RUN useradd --create-home --uid 10005 monitor \
 && mkdir -p /srv/reports/html /srv/reports/workspace \
 && chown -R 10001:10001 /srv/reports
COPY --from=monitoring-build /opt/venv /opt/venv
USER monitor
WORKDIR /home/monitor
EXPOSE 8085
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8085/api/version', timeout=3).status != 200)"
CMD ["companydata-monitor", "ui", "--host", "0.0.0.0", "--port", "8085"]

# ---------------------------------------------------------------------------------------------
# test: the whole test suite for a machine that has Docker but not the suite's system packages
# (make test picks it then; make test TEST_IN=docker forces it). The tests start their own
# PostgreSQL 15 cluster (testkit.localdb; PostgreSQL refuses to run as root, hence the tester
# user), drive Debian's Chromium headless through Playwright, read PDFs back with poppler, render
# with Pango and DejaVu, and run nginx. The workspace is installed as make install does: every
# package editable, with the dev group; the venv is /src/.venv, so `make test-local` runs as is.
FROM base AS test-system
# No cluster at install time: the tests create their own. libatomic1: Playwright's bundled node
# driver needs it (Debian's chromium does not pull it in).
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      postgresql-15 chromium poppler-utils libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
      nginx make libatomic1 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
 && useradd --create-home --uid 10000 tester

FROM test-system AS test
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 UV_CACHE_DIR=/root/.cache/uv
COPY --from=builder /usr/local/bin/uv /usr/local/bin/uv
COPY --from=builder /src /src
WORKDIR /src
COPY testkit/pyproject.toml testkit/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages --no-install-workspace
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-packages \
 && mkdir -p build \
 && chown -R tester:tester /src/build \
 && find /src -path /src/.venv -prune -o -type d -print0 | xargs -0 chown tester:tester
USER tester
CMD ["make", "test-local"]
