"""Several JAX processes as one training job: jax.distributed, then
keras.distribution.DataParallel over the devices of every process (training.distribute).

    initialize(coordinator="10.0.0.1:1234", num_processes=4, process_id=0)  # on each process
    initialize()  # from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or JAX's
                  # own cluster detection (Slurm, Open MPI, Kubernetes, ...)

Call it before anything else touches JAX. On CPU the collectives between processes run on
gloo (jax_cpu_collectives_implementation), which JAX's CPU wheels carry.
"""
import os

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


def initialize(coordinator=None, num_processes=None, process_id=None, timeout_s=300):
    """jax.distributed.initialize for the cluster the arguments or environment name; returns
    (num_processes, process_index), (1, 0) when none is named."""
    cluster = requested(coordinator, num_processes, process_id)
    if cluster is None:
        return 1, 0
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address, count, index = cluster
    jax.distributed.initialize(coordinator_address=address, num_processes=count,
                               process_id=index, initialization_timeout=int(timeout_s))
    return int(jax.process_count()), int(jax.process_index())
