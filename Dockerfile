# Production image: the server on the embedded SQLite store in /data (mount a volume there).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fhir_server ./fhir_server
RUN python -m pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin fhir \
    && mkdir -p /data && chown fhir /data
COPY --from=build /install /usr/local
USER fhir
WORKDIR /data
ENV FHIR_SERVER_HOST=0.0.0.0 \
    FHIR_SERVER_PORT=8080 \
    FHIR_SERVER_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["fhir-server", "serve"]
