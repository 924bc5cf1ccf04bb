from django.urls import path

from jury import api, views

urlpatterns = [
    path("jury/runs/", views.run_list, name="jury_run_list"),
    path("jury/runs/<int:run_id>/", views.run_detail, name="jury_run"),
    path("jury/runs/<int:run_id>/cancel/", views.run_cancel, name="jury_run_cancel"),
    path("jury/runs/<int:run_id>/resume/", views.run_resume, name="jury_run_resume"),
    path("api/v1/jury/runs", api.JuryRunCreateApi.as_view(), name="api_jury_run_create"),
    path("api/v1/jury/runs/<int:run_id>", api.JuryRunDetailApi.as_view(), name="api_jury_run"),
]
