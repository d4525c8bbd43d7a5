"""Small helpers shared across the package: atomic file writes and logging set-up."""
import contextlib
import logging
import os
import tempfile


def get_logger(name="mrcnn_kp"):
    logger = logging.getLogger(name)
    if not logging.getLogger("mrcnn_kp").handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("mrcnn_kp")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False  # absl installs a root handler under TF: avoid printing twice
    return logger


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it is renamed onto `path` in one step.

    A crash (or SIGKILL) while writing leaves the previous file untouched. The temporary name
    keeps the final suffix (Keras checks `.weights.h5` / `.keras` endings).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + base, dir=directory)
    os.close(fd)
    os.unlink(tmp)  # writers such as h5py want to create the file themselves
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def free_localhost_ports(count):
    """`count` distinct TCP ports free on localhost now (bound together, then released), for a
    cluster of local processes (TF_CONFIG's worker addresses, JAX's coordinator)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
