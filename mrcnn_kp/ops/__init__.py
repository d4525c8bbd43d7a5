"""mrcnn_kp.ops (see ../shared/DESIGN.md for what lives here)."""
