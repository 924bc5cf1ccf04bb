from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from common.apidocs import ApiDocsView
from common.http import moved_permanently

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    # The split view serves Swagger UI's start-up script from this URL (?script), not inline: the CSP holds here too.
    path("api/docs/", ApiDocsView.as_view(url_name="api_schema"), name="api_docs"),
    path("", include("annotation.urls")),
    path("", include("guardmodel.urls")),
    path("", include("experts.urls")),
    path("", include("jury.urls")),
    path("", include("training.urls")),
    path("", include("generation.urls")),
    # The unversioned paths of earlier releases answer 308 (method and body kept) at their /api/v1/ home.
    path("api/<path:rest>", moved_permanently(unversioned=("samples", "labels", "strata", "imports"))),
]

# Short, generic error answers (JSON under /api/), never the exception's text or a traceback.
handler400 = "common.errors.bad_request"
handler403 = "common.errors.permission_denied"
handler404 = "common.errors.page_not_found"
handler500 = "common.errors.server_error"
