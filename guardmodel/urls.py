from django.urls import path

from guardmodel import api, views

urlpatterns = [
    path("evaluations/", views.evaluation_list, name="evaluation_list"),
    path("evaluations/<int:evaluation_id>/", views.evaluation_detail, name="evaluation_detail"),
    path(
        "evaluations/<int:evaluation_id>/threshold/",
        views.evaluation_threshold,
        name="evaluation_threshold",
    ),
    path("guard/jobs/<int:job_id>/", views.guard_job, name="guard_job"),
    path("guard/playground/", views.guard_playground, name="guard_playground"),
    path("api/v1/audit", api.AuditApi.as_view(), name="api_audit"),
    path("api/v1/audit/sessions", api.AuditSessionsApi.as_view(), name="api_audit_sessions"),
    path("api/v1/audit/sessions/<str:session>", api.AuditSessionApi.as_view(), name="api_audit_session"),
    path(
        "api/v1/audit/sessions/<str:session>/append",
        api.AuditSessionAppendApi.as_view(),
        name="api_audit_session_append",
    ),
]
