"""The project's URLs plus two views that crash, for the error-page tests (`pytest.mark.urls`)."""

from __future__ import annotations

from django.urls import path
from rest_framework.views import APIView

from guardtrace.urls import handler400, handler403, handler404, handler500, urlpatterns  # noqa: F401

SECRET = "db password is hunter2 at /srv/guardtrace/internal.py"


class CrashingApi(APIView):
    def get(self, request):
        raise RuntimeError(SECRET)


def crashing_page(request):
    raise RuntimeError(SECRET)


urlpatterns = [
    path("api/v1/crash", CrashingApi.as_view()),
    path("crash/", crashing_page),
    *urlpatterns,
]
