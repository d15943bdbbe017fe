"""
A binary file transfer with progress, through the threaded API.

The sender announces the file (name and size, as JSON bytes), then sends it
in 1 MiB binary messages. send() blocks while the receiver is behind (flow
control), so the sender's progress follows what was really taken; the
receiver writes the chunks as they arrive and reports when it has it all.

    python examples/file_transfer.py PATH [DESTINATION_DIR]   # both ends
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
from typing import Any

from twcomms import Client, Server

CHUNK = 1 << 20


def receive_into(directory: str) -> tuple[Server, threading.Event, dict[str, Any]]:
    server = Server("127.0.0.1", 0, messageDataType="binary")
    done = threading.Event()
    state: dict[str, Any] = {}

    def on_message(data: bytes) -> None:
        if "file" not in state:
            header = json.loads(data)
            path = os.path.join(directory, os.path.basename(header["name"]))
            state.update(header, file=open(path, "wb"), path=path, got=0)  # noqa: SIM115
            state["sha256"] = hashlib.sha256()
            return
        state["file"].write(data)
        state["sha256"].update(data)
        state["got"] += len(data)
        if state["got"] >= state["size"]:
            state["file"].close()
            done.set()

    server.add_onmessage_callback(on_message)
    server.start()
    return server, done, state


def send_file(port: int, path: str) -> str:
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    with (
        Client("127.0.0.1", port, messageDataType="binary") as client,
        open(path, "rb") as f,
    ):
        client.send(json.dumps({"name": path, "size": size}).encode())
        sent = 0
        while chunk := f.read(CHUNK):
            client.send(chunk)  # waits if the receiver is behind
            digest.update(chunk)
            sent += len(chunk)
            print(
                f"\rsent {sent / CHUNK:7.1f} / {size / CHUNK:.1f} MiB",
                end="",
                flush=True,
            )
        print(flush=True)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    destination = argv[1] if len(argv) > 1 else tempfile.mkdtemp(prefix="twcomms-")
    target = os.path.join(destination, os.path.basename(argv[0]))
    if os.path.abspath(target) == os.path.abspath(argv[0]):
        print("the destination would overwrite the file being sent", file=sys.stderr)
        return 2
    server, done, state = receive_into(destination)
    try:
        sent_digest = send_file(server.port, argv[0])
        if not done.wait(60):
            print("the receiver did not get everything", file=sys.stderr)
            return 1
    finally:
        server.stop()
    ok = state["sha256"].hexdigest() == sent_digest
    print(
        f"received {state['got']} bytes into {state['path']}: "
        f"{'sha256 matches' if ok else 'SHA256 DIFFERS'}",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
