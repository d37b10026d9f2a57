"""Admin pages that show history and never edit it."""

from typing import TYPE_CHECKING, Any

from django.contrib.admin.options import BaseModelAdmin
from django.db.models import BigIntegerField, ExpressionWrapper, F, OrderBy
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


#: The query parameter of a history list filtered to one job: the job page's link.
ONE_JOB = "job__id__exact"


class NewestFirstAdminMixin(AdminBase):
    """A list of history rows, newest (highest id) first, also when filtered to one job
    (``?job__id__exact=42``, the job page's link)."""

    ordering = ("-pk",)

    @override
    def get_ordering(self, request: HttpRequest) -> Any:
        if ONE_JOB in request.GET:
            # The job page links here when the job's rows are many, which PostgreSQL
            # knows: ordered by the id, it walked the whole table's primary key down to
            # them (1.2 s at ten million attempts). Ordered by an expression of the id,
            # it reads the job's rows from the job's index and sorts them.
            newest_first = ExpressionWrapper(F("pk") + 0, output_field=BigIntegerField())
            return (OrderBy(newest_first, descending=True),)
        return super().get_ordering(request)
