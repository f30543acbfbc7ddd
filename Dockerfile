# Production image: the server on MongoDB (FHIR_SERVER_STORE=mongodb://...; docker-compose.yml
# runs it with a one-node replica set). The server's own files (signing keys, users and
# clients, the audit hash chain) live in /data: mount a volume there.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fhir_server ./fhir_server
# fhir_server/profiles, fhir_server/terminology and fhir_server/mappings are symlinks to these
# folders: without them the installed package has no $refer, no $referral-summary, no
# Communication search parameters, no HL7 v2 maps (tests/test_packaging.py builds the wheel
# from exactly these files).
COPY profiles ./profiles
COPY terminology ./terminology
COPY mappings ./mappings
RUN python -m pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
# DejaVu Sans sets the record PDFs (privacy/exports/pdf.py: every letter of European names)
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin fhir \
    && mkdir -p /data /keys && chown fhir /data /keys
COPY --from=build /install /usr/local
COPY bin/docker-entrypoint /usr/local/bin/docker-entrypoint
USER fhir
WORKDIR /data
VOLUME /data
ENV FHIR_SERVER_HOST=0.0.0.0 \
    FHIR_SERVER_PORT=8080 \
    FHIR_SERVER_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"
STOPSIGNAL SIGTERM
# `fhir-server migrate`, then `fhir-server serve` with the container's arguments.
ENTRYPOINT ["docker-entrypoint"]
