from django.urls import path

from annotation import api, review_api, review_views, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("samples/", views.sample_list, name="sample_list"),
    path("samples/<int:sample_id>/", views.sample_detail, name="sample_detail"),
    path("samples/<int:sample_id>/image/", views.sample_image_panel, name="sample_image"),
    path("images/<str:sha256>/", views.image_view, name="image"),
    path("images/<str:sha256>/preview/", views.image_preview, name="image_preview"),
    path("expert/", review_views.expert_home, name="expert_home"),
    path("expert/claim/", review_views.expert_claim, name="expert_claim"),
    path("expert/slots/<int:slot_id>/", review_views.expert_slot, name="expert_slot"),
    path("expert/slots/<int:slot_id>/submit/", review_views.expert_submit, name="expert_submit"),
    path("expert/slots/<int:slot_id>/skip/", review_views.expert_skip, name="expert_skip"),
    path("expert/slots/<int:slot_id>/renew/", review_views.expert_renew, name="expert_renew"),
    path("expert/adjudication/", review_views.adjudication, name="adjudication"),
    path("expert/agreement/", review_views.agreement_page, name="agreement"),
    path("expert/agreement/draw/", review_views.reliability_draw, name="reliability_draw"),
    path("review/disagreements/", review_views.disagreement_list, name="disagreement_list"),
    path("review/disagreements/<int:sample_id>/", review_views.disagreement_detail, name="disagreement"),
    path("api/samples/", api.SampleListApi.as_view(), name="api_sample_list"),
    path("api/samples/bulk/", api.SampleBulkCreateApi.as_view(), name="api_sample_bulk_create"),
    path("api/samples/export/", api.SampleExportApi.as_view(), name="api_sample_export"),
    path("api/samples/<int:sample_id>/", api.SampleDetailApi.as_view(), name="api_sample_detail"),
    path("api/labels/", api.LabelListCreateApi.as_view(), name="api_label_list"),
    path("api/strata/", api.StratumCountsApi.as_view(), name="api_strata"),
    path("api/imports/", api.ImportJobCreateApi.as_view(), name="api_import_create"),
    path("api/imports/<int:job_id>/", api.ImportJobDetailApi.as_view(), name="api_import_detail"),
    path("api/v1/expert/claim", review_api.ExpertClaimApi.as_view(), name="api_expert_claim"),
    path(
        "api/v1/expert/slots/<int:slot_id>/submit",
        review_api.ExpertSubmitApi.as_view(),
        name="api_expert_submit",
    ),
    path(
        "api/v1/expert/slots/<int:slot_id>/skip", review_api.ExpertSkipApi.as_view(), name="api_expert_skip"
    ),
    path(
        "api/v1/expert/slots/<int:slot_id>/renew",
        review_api.ExpertRenewApi.as_view(),
        name="api_expert_renew",
    ),
]
