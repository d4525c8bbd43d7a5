"""Tests of mrcnn_kp.config. A package, so that its modules' names (test_presets, test_base)
stay apart from test modules of the same name elsewhere in tests/."""
