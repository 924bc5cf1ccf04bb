from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from common.http import moved_permanently

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    path("", include("annotation.urls")),
    path("", include("guardmodel.urls")),
    path("", include("experts.urls")),
    path("", include("jury.urls")),
    path("", include("training.urls")),
    path("", include("generation.urls")),
    # The unversioned paths of earlier releases answer 308 (method and body kept) at their /api/v1/ home.
    path("api/<path:rest>", moved_permanently(unversioned=("samples", "labels", "strata", "imports"))),
]
