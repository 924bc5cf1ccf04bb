FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
# torch from PyPI is the CUDA build, which the gpu worker needs; the pin matches the CPU build used in development.
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir -e '.[ml,prod]'
COPY . .
EXPOSE 8000
CMD ["gunicorn", "guardtrace.wsgi:application", "--bind", "0.0.0.0:8000"]
