"""Several JAX processes as one training job: jax.distributed, then
keras.distribution.DataParallel over the devices of every process (training.distribute).

    initialize(coordinator="10.0.0.1:1234", num_processes=4, process_id=0)  # on each process
    initialize()  # from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or JAX's
                  # own cluster detection (Slurm, Open MPI, Kubernetes, ...)

Call it before anything else touches JAX. On CPU the collectives between processes run on
gloo (jax_cpu_collectives_implementation), which JAX's CPU wheels carry.

A lost process: when a peer process dies, the next collective of the others fails at once
(gloo: "Connection closed by peer"; the trainer raises training.distribute.WorkerLost). When a
peer stops answering without closing its connections (a host gone), the coordination service
finds it by its missing heartbeats: after `heartbeat_timeout_s` (MRCNN_KP_COLLECTIVE_TIMEOUT,
else JAX's 100 s) it ends every process (SIGABRT; not an exception Python can catch). The same
wait is in a survivor's normal exit: JAX's exit handler meets the other processes at a shutdown
barrier, which the lost one never reaches; `exit_now(status)` ends the process without it.
"""
import os
import sys

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def requested(coordinator=None, num_processes=None, process_id=None, environ=None):
    """(coordinator, num_processes, process_id) from the arguments, else the environment;
    None when neither names a cluster. Raises ValueError when only part of one is given."""
    environ = os.environ if environ is None else environ
    values = [coordinator, num_processes, process_id]
    for i, name in enumerate(ENV):
        if values[i] is None and environ.get(name):
            values[i] = environ[name]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        missing = [n for n, v in zip(("--coordinator", "--num-processes", "--process-id"), values)
                   if v is None]
        raise ValueError(f"a JAX cluster needs the coordinator address, the number of processes "
                         f"and this process' id; missing {', '.join(missing)} (or "
                         f"{', '.join(ENV)})")
    coordinator, count, index = str(values[0]), int(values[1]), int(values[2])
    if not 0 <= index < count:
        raise ValueError(f"process id {index} is not in 0..{count - 1}")
    return coordinator, count, index


def initialize(coordinator=None, num_processes=None, process_id=None, timeout_s=300,
               heartbeat_timeout_s=None):
    """jax.distributed.initialize for the cluster the arguments or environment name; returns
    (num_processes, process_index), (1, 0) when none is named.

    timeout_s: how long to wait for every process to connect. heartbeat_timeout_s: after how
    long without a heartbeat a process counts as dead and the job is ended (default:
    MRCNN_KP_COLLECTIVE_TIMEOUT, else JAX's 100 s).
    """
    cluster = requested(coordinator, num_processes, process_id)
    if cluster is None:
        return 1, 0
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address, count, index = cluster
    heartbeat = heartbeat_timeout(heartbeat_timeout_s)
    extra = {} if heartbeat is None else {"heartbeat_timeout_seconds": heartbeat}
    jax.distributed.initialize(coordinator_address=address, num_processes=count,
                               process_id=index, initialization_timeout=int(timeout_s), **extra)
    return int(jax.process_count()), int(jax.process_index())


def heartbeat_timeout(seconds=None, environ=None):
    """Whole seconds for jax.distributed's heartbeat_timeout_seconds, from `seconds`, else
    MRCNN_KP_COLLECTIVE_TIMEOUT; None (JAX's default) when neither is given."""
    if seconds is None:
        seconds = (os.environ if environ is None else environ).get(
            "MRCNN_KP_COLLECTIVE_TIMEOUT") or None
    if seconds is None:
        return None
    value = float(seconds)
    if value <= 0:
        raise ValueError(f"the heartbeat timeout must be > 0 seconds, got {seconds!r}")
    return max(1, int(round(value)))


def exit_now(status):
    """End this process with `status` now when it is part of a JAX cluster (else return).

    After a lost worker (WorkerLost) the normal exit would wait at jax.distributed's shutdown
    barrier for the lost process until the heartbeat timeout and then abort; this skips that
    (and every other exit handler: checkpoints are already complete on disk)."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))
