"""mrcnn_kp/utils.py: helpers with no layer of their own."""
import socket

from mrcnn_kp.utils import free_localhost_ports


def test_free_localhost_ports_are_distinct_and_bindable():
    ports = free_localhost_ports(3)
    assert len(set(ports)) == 3 and all(1024 <= p < 65536 for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("localhost", port))
