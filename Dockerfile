# Mirrors the Makefile: install the package, run gunicorn on the factory as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY service ./service
# the web page's demo patients (found under ./fixtures of the working directory)
COPY fixtures/demo-*.json ./fixtures/
RUN pip install --no-cache-dir -c constraints.txt . && mkdir -p /app/var && chown app:app /app/var

USER app
# threaded workers (service.serving.BufferingWorker: a thread per connection only once its
# request has arrived, so slow clients hold none; put a buffering proxy such as
# deploy/nginx.conf in front for TLS): WORKERS processes (default two per core the container may run on, at most
# 16; set WORKERS when the container's CPU is limited by a quota rather than by cpuset) x THREADS
# threads each (default 2); the metrics of every worker are added up by /metrics. Several
# replicas share one PostgreSQL: set DATABASE_URL.
ENV DATABASE_URL=sqlite:////app/var/baclofen-check.sqlite3
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
CMD ["baclofen-check", "serve", "--bind", "0.0.0.0:8080"]
