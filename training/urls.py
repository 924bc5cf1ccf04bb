from django.urls import path

from training import views

urlpatterns = [
    path("training/", views.run_list, name="training_runs"),
    path("training/runs/<int:run_id>/", views.run_detail, name="training_run"),
    path("training/runs/<int:run_id>/cancel/", views.run_cancel, name="training_run_cancel"),
    path("training/runs/<int:run_id>/resume/", views.run_resume, name="training_run_resume"),
    path("training/runs/<int:run_id>/activate/", views.run_activate, name="training_run_activate"),
    path("training/snapshots/<int:snapshot_id>/", views.snapshot_detail, name="training_snapshot"),
    path("checkpoints/<int:checkpoint_id>/lineage/", views.checkpoint_lineage, name="checkpoint_lineage"),
]
