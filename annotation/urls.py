from django.urls import path

from annotation import api, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("samples/", views.sample_list, name="sample_list"),
    path("samples/<int:sample_id>/", views.sample_detail, name="sample_detail"),
    path("samples/<int:sample_id>/image/", views.sample_image_panel, name="sample_image"),
    path("images/<str:sha256>/", views.image_view, name="image"),
    path("images/<str:sha256>/preview/", views.image_preview, name="image_preview"),
    path("api/v1/samples", api.SampleListApi.as_view(), name="api_sample_list"),
    path("api/v1/samples/bulk", api.SampleBulkCreateApi.as_view(), name="api_sample_bulk_create"),
    path("api/v1/samples/export", api.SampleExportApi.as_view(), name="api_sample_export"),
    path("api/v1/samples/<int:sample_id>", api.SampleDetailApi.as_view(), name="api_sample_detail"),
    path("api/v1/labels", api.LabelListCreateApi.as_view(), name="api_label_list"),
    path("api/v1/strata", api.StratumCountsApi.as_view(), name="api_strata"),
    path("api/v1/imports", api.ImportJobCreateApi.as_view(), name="api_import_create"),
    path("api/v1/imports/<int:job_id>", api.ImportJobDetailApi.as_view(), name="api_import_detail"),
    path("api/v1/imports/<int:job_id>/cancel", api.ImportJobCancelApi.as_view(), name="api_import_cancel"),
    path("api/v1/imports/<int:job_id>/resume", api.ImportJobResumeApi.as_view(), name="api_import_resume"),
    path("api/v1/exports", api.ExportJobCreateApi.as_view(), name="api_export_create"),
    path("api/v1/exports/<int:job_id>", api.ExportJobDetailApi.as_view(), name="api_export_detail"),
    path(
        "api/v1/exports/<int:job_id>/download", api.ExportJobDownloadApi.as_view(), name="api_export_download"
    ),
    path("api/v1/exports/<int:job_id>/cancel", api.ExportJobCancelApi.as_view(), name="api_export_cancel"),
]
