# One container: the API, its stream workers and (when REDIS_URL is not set) the embedded
# Redis Cluster. For production, set REDIS_URL to MemoryDB/ElastiCache and scale the container.
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server=5:7.* \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 app
WORKDIR /app

COPY pyproject.toml README.md alembic-free-config.toml ./
COPY app ./app
COPY workers ./workers
RUN pip install --no-cache-dir . \
    && mkdir -p /app/var \
    && chown app:app /app/var

USER 10001
ENV PYTHONUNBUFFERED=1 \
    APP_SERVER__HOST=0.0.0.0 \
    APP_SERVER__ENVIRONMENT=production \
    APP_EMBEDDED__DATA_DIR=/app/var/redis
VOLUME ["/app/var"]
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]

CMD ["python", "-m", "app", "serve"]
