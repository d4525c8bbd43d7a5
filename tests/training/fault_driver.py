"""Runs `mrcnn-kp train` in a subprocess with a fault injected, for the fault tests.

    python fault_driver.py none ARGV...             the command as a user runs it
    python fault_driver.py kill-at-step N ARGV...   SIGKILL itself when training step N of this
                                                    process has ended (N counts from 1)
    python fault_driver.py kill-in-write N ARGV...  SIGKILL itself halfway through writing the
                                                    weights of its N-th checkpoint (the temporary
                                                    file holds half the bytes, not yet renamed)

SIGKILL cannot be caught: nothing of ours runs after it, as after a power cut or the OOM killer.
"""
import os
import signal
import sys


def kill_now():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_step(step):
    from mrcnn_kp.training import callbacks

    original = callbacks.NonFiniteMonitor.on_train_batch_end
    ended = [0]

    def on_train_batch_end(self, batch, logs=None):
        original(self, batch, logs)
        ended[0] += 1
        if ended[0] == step:
            print(f"fault_driver: SIGKILL after step {batch + 1} of epoch {self._epoch + 1}",
                  flush=True)
            kill_now()

    callbacks.NonFiniteMonitor.on_train_batch_end = on_train_batch_end


def kill_in_write(count):
    import keras

    original = keras.Model.save_weights
    written = [0]

    def save_weights(self, filepath, *args, **kwargs):
        original(self, filepath, *args, **kwargs)
        written[0] += 1
        if written[0] == count:
            size = os.path.getsize(filepath)
            with open(filepath, "r+b") as f:
                f.truncate(size // 2)
            print(f"fault_driver: SIGKILL while writing {filepath} ({size // 2} of {size} "
                  f"bytes)", flush=True)
            kill_now()

    keras.Model.save_weights = save_weights


def main(argv):
    mode = argv[0]
    if mode == "kill-at-step":
        kill_at_step(int(argv[1]))
        argv = argv[2:]
    elif mode == "kill-in-write":
        kill_in_write(int(argv[1]))
        argv = argv[2:]
    elif mode == "none":
        argv = argv[1:]
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    from mrcnn_kp import cli

    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
