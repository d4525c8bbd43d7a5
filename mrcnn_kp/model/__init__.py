"""mrcnn_kp.model (see docs/DESIGN.md for what lives here)."""
