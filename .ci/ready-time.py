#!/usr/bin/env python3
"""Time from exec to sd_notify READY=1 for `printgate run` (zero printers).

Usage: ready-time.py [runner ...] BINARY   e.g. ready-time.py qemu-aarch64-static target/.../printgate
Binds a datagram socket, points NOTIFY_SOCKET at it, starts the daemon with a
temporary config and data folder, waits (bounded) for READY=1, stops it with
SIGTERM and checks it exits 0. Prints the time in milliseconds.
"""
import os, signal, socket, subprocess, sys, tempfile, time

cmd = sys.argv[1:]
if not cmd:
    sys.exit(__doc__)
with tempfile.TemporaryDirectory() as tmp:
    sock_path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    config = os.path.join(tmp, "printgate.toml")
    with open(config, "w") as f:
        f.write(f'[gateway]\nid = "ready-probe"\ndata_dir = "{tmp}/data"\n')
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, RUST_LOG="warn")
    start = time.monotonic()
    proc = subprocess.Popen(cmd + ["run", "--config", config], env=env)
    try:
        while True:
            msg = sock.recv(4096).decode(errors="replace")
            if "READY=1" in msg.split("\n"):
                break
        ms = (time.monotonic() - start) * 1000
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if code != 0:
        sys.exit(f"ready-time: daemon exited {code} after SIGTERM")
    print(f"cold start to READY: {ms:.0f} ms ({' '.join(cmd)})")
