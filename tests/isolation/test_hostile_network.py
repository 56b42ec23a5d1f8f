"""Class: reaching the network or a host socket. The hook process has its own empty network namespace,
no host folder with sockets in it, and a filter that refuses socket() itself."""

import pytest

from tests.isolation.hostile import Listeners, attack, call_hook

pytestmark = pytest.mark.usefixtures("jail")


@pytest.fixture
def listeners(tmp_path):
    ls = Listeners(tmp_path)
    yield ls
    ls.close()


def test_no_connection_reaches_a_loopback_or_unix_listener(listeners):
    src = attack(f"""
        import socket, time
        tries = [
            lambda: socket.create_connection(("127.0.0.1", {listeners.tcp_port}), timeout=1),
            lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", {listeners.udp_port})),
            lambda: socket.socket(socket.AF_UNIX).connect({listeners.unix_path!r}),
            lambda: socket.socket(socket.AF_UNIX).connect({listeners.abstract_name!r}),
            lambda: socket.socket(socket.AF_INET6).connect(("::1", {listeners.tcp_port})),
            lambda: socket.getaddrinfo("example.com", 80),
        ]
        for t in tries:
            try:
                t()
            except BaseException:
                pass
        time.sleep(0.3)
    """)
    res = call_hook(src)
    assert not isinstance(res, Exception), res
    # the same attempts from this (unjailed) process do reach them: the listeners work
    assert listeners.got == []
    import socket
    socket.create_connection(("127.0.0.1", listeners.tcp_port), timeout=1).close()
    c = socket.socket(socket.AF_UNIX)
    c.connect(listeners.abstract_name)
    c.close()
    import time
    time.sleep(0.5)
    assert set(listeners.got) == {"AF_INET:connection", "AF_UNIX:connection"}
