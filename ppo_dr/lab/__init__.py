"""The embedded lab fleet: realistic servers, network, front door and workload on 127.0.0.1."""
