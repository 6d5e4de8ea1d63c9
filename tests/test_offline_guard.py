import socket

import pytest


def test_network_attempt_fails():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="network access attempted"):
            s.connect(("93.184.216.34", 80))
    finally:
        s.close()
