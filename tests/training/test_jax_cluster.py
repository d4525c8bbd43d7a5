"""The JAX cluster's settings (mrcnn_kp/training/jax_cluster.py); the cluster itself runs in
tests/training/test_multi_worker.py."""
import pytest

from mrcnn_kp.training import jax_cluster


def test_the_cluster_comes_from_the_arguments_else_the_environment():
    assert jax_cluster.requested(environ={}) is None
    assert jax_cluster.requested("a:1234", 2, 1, environ={}) == ("a:1234", 2, 1)
    environ = {"JAX_COORDINATOR_ADDRESS": "b:1", "JAX_NUM_PROCESSES": "4",
               "JAX_PROCESS_ID": "3"}
    assert jax_cluster.requested(environ=environ) == ("b:1", 4, 3)
    assert jax_cluster.requested(process_id=0, environ=environ) == ("b:1", 4, 0)
    with pytest.raises(ValueError, match="missing --num-processes, --process-id"):
        jax_cluster.requested("a:1234", environ={})
    with pytest.raises(ValueError, match=r"process id 2 is not in 0\.\.1"):
        jax_cluster.requested("a:1234", 2, 2, environ={})


def test_the_heartbeat_timeout_is_the_collective_timeout_else_jaxs_own():
    assert jax_cluster.heartbeat_timeout(environ={}) is None  # JAX's default (100 s)
    assert jax_cluster.heartbeat_timeout(environ={"MRCNN_KP_COLLECTIVE_TIMEOUT": "20"}) == 20
    assert jax_cluster.heartbeat_timeout(7.6, environ={"MRCNN_KP_COLLECTIVE_TIMEOUT": "20"}) == 8
    assert jax_cluster.heartbeat_timeout(0.2, environ={}) == 1
    with pytest.raises(ValueError, match="must be > 0 seconds"):
        jax_cluster.heartbeat_timeout(0, environ={})


def test_exit_now_returns_outside_a_jax_cluster():
    assert jax_cluster.exit_now(3) is None  # this process is in no cluster: nothing to skip
