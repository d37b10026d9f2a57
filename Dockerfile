# The image of the web, worker and beat services in docker-compose.yml.
FROM python:3.11-slim

# DJANGO_DEBUG off unless a deployment turns it on (docker-compose.yml does, for
# development): an image started without its settings then refuses to run without
# DJANGO_SECRET_KEY, rather than serving debug pages with a key everyone knows.
ENV DJANGO_DEBUG=false \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them. Runtime only:
# requirements-dev.txt (tests, linters, the local SQS and PostgreSQL servers) stays out.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# The admin's CSS and scripts, in /app/staticfiles for the web server or CDN to serve at
# /static/: with DJANGO_DEBUG off, Django does not serve them itself.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

# Celery refuses nothing as root but warns; no service here needs root.
RUN useradd --create-home --uid 10001 app
USER app

# gunicorn binds 0.0.0.0:$PORT; docker-compose.yml's web runs runserver instead, for
# development. Two workers by default: WEB_CONCURRENCY=4 (or GUNICORN_CMD_ARGS="--workers
# 4") changes it; given on the command line, a worker count would override both.
ENV PORT=8000 WEB_CONCURRENCY=2
EXPOSE 8000
CMD ["gunicorn", "project.wsgi:application", "--access-logfile", "-"]
