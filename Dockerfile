# A slim, non-root image that runs `keyservice serve`. Configure it with KEYSERVICE_* variables;
# in production set KEYSERVICE_MODE=production and KEYSERVICE_DATABASE_URL, and run
# `keyservice migrate` (same image) before rolling out a new version.
FROM python:3.12-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md alembic.ini ./
COPY src ./src
COPY migrations ./migrations
RUN python -m build --wheel --outdir /dist

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --create-home --home-dir /app keyservice
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
USER keyservice
WORKDIR /app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
ENTRYPOINT ["keyservice"]
# Set KEYSERVICE_FORWARDED_ALLOW_IPS to your proxies' addresses, so that client addresses (audit
# trail, throttles) come from X-Forwarded-For; only from them, or clients could choose their own.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
