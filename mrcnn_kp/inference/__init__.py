"""mrcnn_kp.inference (see ../shared/DESIGN.md for what lives here)."""
