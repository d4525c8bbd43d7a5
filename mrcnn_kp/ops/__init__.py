"""mrcnn_kp.ops (see docs/DESIGN.md for what lives here)."""
