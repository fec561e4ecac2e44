"""Start, reset and stop the gcloud Firestore and Pub/Sub emulators for tests (one process group each)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

TEST_PROJECT = "mailbridge-test"
START_TIMEOUT = 60.0


class EmulatorMissingError(RuntimeError):
    """gcloud, Java or an emulator component is not installed: a failure, never a reason to skip."""


class Emulator:
    """One running emulator: `host` is "127.0.0.1:PORT" (the value of *_EMULATOR_HOST)."""

    def __init__(self, name: str, process: subprocess.Popen, host: str, log_path: Path):
        self.name = name
        self.process = process
        self.host = host
        self.log_path = log_path

    def reset(self, project: str = TEST_PROJECT) -> None:
        """Drop all state: every Firestore document of `project`, or every Pub/Sub topic and subscription."""
        if self.name == "firestore":
            reset_firestore(self.host, project)
        else:
            reset_pubsub(self.host)

    def stop(self) -> None:
        """Kill the whole process group: killing the gcloud/launcher process alone leaves Java running."""
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # the group may outlive its leader (Java forked by a shell script)
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "Emulator":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def sdk_root() -> Path:
    """The Cloud SDK root (the folder holding `platform/`); EmulatorMissingError without gcloud or Java."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise EmulatorMissingError("gcloud is not on PATH: install the Google Cloud SDK with its emulators")
    if not shutil.which("java"):
        raise EmulatorMissingError("java is not on PATH: the gcloud emulators need Java 11+")
    root = Path(gcloud).resolve().parent.parent
    if (root / "platform").is_dir():
        return root
    out = subprocess.run([gcloud, "info", "--format=value(installation.sdk_root)"],
                         capture_output=True, text=True, timeout=60)
    return Path(out.stdout.strip())


def start_firestore(timeout: float = START_TIMEOUT) -> Emulator:
    """Start the Firestore emulator on a free port and wait until it answers."""
    binary = sdk_root() / "platform" / "cloud-firestore-emulator" / "cloud_firestore_emulator"
    if not binary.exists():
        raise EmulatorMissingError(f"Firestore emulator missing ({binary}): "
                                   "gcloud components install cloud-firestore-emulator")
    port = free_port()
    return _start("firestore", [str(binary), "start", "--host=127.0.0.1", f"--port={port}"], port, timeout)


def start_pubsub(timeout: float = START_TIMEOUT) -> Emulator:
    """Start the Pub/Sub emulator on a free port (state kept in a temp folder) and wait until it answers."""
    binary = sdk_root() / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not binary.exists():
        raise EmulatorMissingError(f"Pub/Sub emulator missing ({binary}): "
                                   "gcloud components install pubsub-emulator")
    port = free_port()
    return _start("pubsub", [str(binary), "--host=127.0.0.1", f"--port={port}"], port, timeout)


def reset_firestore(host: str, project: str = TEST_PROJECT) -> None:
    """Delete every document of `project`'s default database on the emulator at `host` (~12 ms)."""
    _http("DELETE", f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents")


def reset_pubsub(host: str) -> None:
    """Delete every topic and subscription on the Pub/Sub emulator at `host`."""
    _http("POST", f"http://{host}/reset")


def free_port() -> int:
    """A port nothing listens on right now (the emulator binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(name: str, argv: list[str], port: int, timeout: float) -> Emulator:
    # Output goes to a file, not a pipe: a full pipe would block the emulator.
    fd, log = tempfile.mkstemp(prefix=f"mailbridge-{name}-emulator-", suffix=".log")
    with os.fdopen(fd, "wb") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    emulator = Emulator(name, process, f"127.0.0.1:{port}", Path(log))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = _tail(emulator.log_path)
            emulator.stop()
            raise EmulatorMissingError(f"{name} emulator exited with {process.returncode}:\n{text}")
        try:
            _http("GET", f"http://{emulator.host}/", timeout=1)
            return emulator
        except OSError:
            time.sleep(0.1)
    text = _tail(emulator.log_path)
    emulator.stop()
    raise TimeoutError(f"{name} emulator not ready within {timeout:.0f} s:\n{text}")


def _http(method: str, url: str, timeout: float = 10) -> bytes:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""
