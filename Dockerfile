# The image of the web, worker and beat services in docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them. Runtime only:
# requirements-dev.txt (tests, linters, the local SQS and PostgreSQL servers) stays out.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Celery refuses nothing as root but warns; no service here needs root.
RUN useradd --create-home --uid 10001 app
USER app

EXPOSE 8000
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000", "--noreload"]
