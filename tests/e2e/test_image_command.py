"""The Docker image's own command serves the site with a production WSGI server.

It was ``manage.py runserver``: whoever ran the image as it is in production got
Django's development server. No Docker engine here: the test runs the Dockerfile's
``CMD`` as the image would, with the image's environment and ``PORT``.
"""

import json
import re

import requests

from tests.processes import BIN, ROOT, Process, free_port

SECRET_KEY = "x7-" + "k" * 20 + "-image-command-test-key-with-entropy-qwertyuiop"


def image_command() -> list[str]:
    [cmd] = re.findall(r"^CMD (.+)$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    command: list[str] = json.loads(cmd)
    return command


def test_the_image_serves_the_site_with_gunicorn_on_its_port() -> None:
    port = free_port()
    command = image_command()
    assert "runserver" not in command
    web = Process(
        "image-web",
        [str(BIN / command[0]), *command[1:]],
        {
            "PORT": str(port),
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": SECRET_KEY,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        },
    )
    try:

        def answers() -> bool:
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=2, allow_redirects=False)
            except requests.RequestException:
                return False
            return True

        web.wait_until_ready(answers, timeout=30, waiting_for=f"it served port {port}")
        response = requests.get(
            f"http://127.0.0.1:{port}/admin/login/", timeout=5, allow_redirects=False
        )
        # Django answered (with DEBUG off, plain http goes to https), through gunicorn.
        assert response.status_code == 301, response.text
        assert response.headers["Location"].startswith("https://127.0.0.1")
        assert response.headers["Server"] == "gunicorn", response.headers
        # A load balancer's health check names the target by its address, over http.
        health = requests.get(
            f"http://127.0.0.1:{port}/healthz", headers={"Host": "10.0.1.23"}, timeout=5
        )
        assert (health.status_code, health.text) == (200, "ok\n")
    finally:
        web.stop()
