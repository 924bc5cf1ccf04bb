from django.urls import path

from experts import api, views

urlpatterns = [
    path("expert/", views.expert_home, name="expert_home"),
    path("expert/claim/", views.expert_claim, name="expert_claim"),
    path("expert/slots/<int:slot_id>/", views.expert_slot, name="expert_slot"),
    path("expert/slots/<int:slot_id>/submit/", views.expert_submit, name="expert_submit"),
    path("expert/slots/<int:slot_id>/skip/", views.expert_skip, name="expert_skip"),
    path("expert/slots/<int:slot_id>/renew/", views.expert_renew, name="expert_renew"),
    path("expert/slots/<int:slot_id>/revise/", views.expert_revise, name="expert_revise"),
    path("expert/adjudication/", views.adjudication, name="adjudication"),
    path("expert/agreement/", views.agreement_page, name="agreement"),
    path("expert/agreement/draw/", views.reliability_draw, name="reliability_draw"),
    path("review/disagreements/", views.disagreement_list, name="disagreement_list"),
    path("review/disagreements/<int:sample_id>/", views.disagreement_detail, name="disagreement"),
    path("review/decisions/<int:decision_id>/undo/", views.disagreement_undo, name="disagreement_undo"),
    path("api/v1/expert/claim", api.ExpertClaimApi.as_view(), name="api_expert_claim"),
    path(
        "api/v1/expert/slots/<int:slot_id>/submit",
        api.ExpertSubmitApi.as_view(),
        name="api_expert_submit",
    ),
    path("api/v1/expert/slots/<int:slot_id>/skip", api.ExpertSkipApi.as_view(), name="api_expert_skip"),
    path(
        "api/v1/expert/slots/<int:slot_id>/renew",
        api.ExpertRenewApi.as_view(),
        name="api_expert_renew",
    ),
]
