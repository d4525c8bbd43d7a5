"""mrcnn_kp.training (see ../shared/DESIGN.md for what lives here)."""
