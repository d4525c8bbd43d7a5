"""mrcnn_kp.training: the staged trainer (see docs/DESIGN.md for where it sits).

    stages.py       `layers=` presets ("heads", "3+", "4+", "5+", "all") or a regex -> set_trainable
    schedules.py    warm-up, then step or cosine decay (keras LearningRateSchedules)
    optimizer.py    guarded SGD: momentum, weight decay on kernels, global-norm clipping,
                    non-finite updates skipped, mixed-precision loss scaling
    checkpoints.py  atomic weights + optimizer-state checkpoints in run directories (their
                    names and find_last: mrcnn_kp.run_directory)
    callbacks.py    checkpoint per epoch, Ctrl-C/SIGTERM, NaN reporting, time budget, TensorBoard
    distribute.py   MirroredStrategy (TensorFlow) / DataParallel (JAX) for GPU_COUNT > 1
    trainer.py      Trainer: train(layers, epochs) stage by stage, load_checkpoint / resume

The user-facing `MaskRCNN` facade is mrcnn_kp.maskrcnn (it also needs mrcnn_kp.inference,
which this package never imports).
"""
