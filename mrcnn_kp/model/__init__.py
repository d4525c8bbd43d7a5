"""mrcnn_kp.model (see ../shared/DESIGN.md for what lives here)."""
