FROM python:3.11-slim
WORKDIR /app
# pg_dump / pg_restore for `manage.py backup` / `restore`: the major version of docker-compose.yml's PostgreSQL (a
# pg_dump older than the server refuses to run), from the PostgreSQL project's Debian repository.
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-common ca-certificates \
    && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
    && apt-get install -y --no-install-recommends postgresql-client-16 \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
# torch from PyPI is the CUDA build, which the gpu worker needs; the pin matches the CPU build used in development.
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir -e '.[ml,prod]'
COPY . .
EXPOSE 8000
CMD ["gunicorn", "guardtrace.wsgi:application", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--threads", "8"]
