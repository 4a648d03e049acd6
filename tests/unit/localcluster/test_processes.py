from iflearner.localcluster import processes


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = processes.free_ports(64)
    assert len(set(ports)) == 64
    held = []
    try:
        for port in ports:  # each one can be bound by a server now
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))
            held.append(sock)
    finally:
        for sock in held:
            sock.close()
