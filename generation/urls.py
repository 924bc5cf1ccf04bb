from django.urls import path

from generation import views

urlpatterns = [
    path("generation/", views.seed_sets, name="seed_sets"),
    path("generation/seeds/<int:set_id>/", views.seed_set, name="seed_set"),
    path("generation/seeds/query/<int:seed_id>/attach/", views.seed_attach, name="seed_attach"),
    path("generation/runs/", views.run_list, name="generation_runs"),
    path("generation/runs/<int:run_id>/", views.run_detail, name="generation_run"),
    path("generation/runs/<int:run_id>/cancel/", views.run_cancel, name="generation_run_cancel"),
    path("generation/runs/<int:run_id>/resume/", views.run_resume, name="generation_run_resume"),
]
