"""`make run`'s demo admin user: only in a database that has no user at all."""

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from devtools.run import DEMO_ADMIN, _ensure_demo_admin

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def debug(settings: Any) -> None:
    settings.DEBUG = True


def test_a_fresh_database_gets_the_demo_admin() -> None:
    assert _ensure_demo_admin()
    username, password = DEMO_ADMIN
    assert get_user_model().objects.get(username=username).check_password(password)


def test_a_database_with_users_gets_no_demo_admin() -> None:
    # `make run` pointed at a shared or restored database added admin/admin to it.
    get_user_model().objects.create_user("someone", password="their own")
    assert not _ensure_demo_admin()
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["someone"]


def test_an_admin_of_its_own_is_not_announced_as_the_demo_one() -> None:
    username, _ = DEMO_ADMIN
    get_user_model().objects.create_superuser(username, password="another")
    assert not _ensure_demo_admin()
