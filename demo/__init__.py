"""Layer 6: the demo `make run` sets up — demo users and data, the tiny demo jurors, reasoner and guard, trained once
on CPU and cached under `var/models/`, and the runs that fill every page. Nothing below imports it."""
