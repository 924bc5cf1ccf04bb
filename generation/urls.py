from django.urls import path

from generation import views

urlpatterns = [
    path("generation/", views.seed_sets, name="seed_sets"),
    path("generation/seeds/<int:set_id>/", views.seed_set, name="seed_set"),
]
