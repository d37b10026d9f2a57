"""Admin pages that show history and never edit it."""

from typing import TYPE_CHECKING, Any

from django.contrib.admin.options import BaseModelAdmin
from django.http import HttpRequest
from typing_extensions import override

# The admin classes are generic only in django-stubs.
if TYPE_CHECKING:
    AdminBase = BaseModelAdmin[Any]
else:
    AdminBase = object


class ReadOnlyAdminMixin(AdminBase):
    """No add, change or delete: rows change only through their services."""

    @override
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @override
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @override
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobHistoryAdminMixin(ReadOnlyAdminMixin):
    """A job's history (its attempts, its audit trail): seen by whoever may view the job."""

    @override
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("scheduler.view_scheduledjob") or request.user.has_perm(
            "scheduler.change_scheduledjob"
        )
