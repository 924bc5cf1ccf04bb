from django.urls import path

from training import views

urlpatterns = [
    path("training/", views.run_list, name="training_runs"),
    path("training/runs/<int:run_id>/", views.run_detail, name="training_run"),
    path("training/runs/<int:run_id>/<str:action>/", views.run_control, name="training_run_control"),
    path("training/snapshots/<int:snapshot_id>/", views.snapshot_detail, name="training_snapshot"),
    path("checkpoints/<int:checkpoint_id>/lineage/", views.checkpoint_lineage, name="checkpoint_lineage"),
]
