"""mrcnn_kp.data (see ../shared/DESIGN.md for what lives here)."""
