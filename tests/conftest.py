"""Fixtures shared by every test folder: the gcloud emulators (once per session) and `store` on both backends."""
from __future__ import annotations

import pytest

from tests import emulators


@pytest.fixture(scope="session")
def firestore_emulator():
    """host:port of a Firestore emulator for the session; FIRESTORE_EMULATOR_HOST points at it.

    A missing gcloud/Java/emulator raises (EmulatorMissingError): in CI that is a failure, not a skip.
    """
    with emulators.start_firestore() as emulator, pytest.MonkeyPatch.context() as env:
        env.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
        yield emulator.host


@pytest.fixture(scope="session")
def pubsub_emulator():
    """host:port of a Pub/Sub emulator for the session; PUBSUB_EMULATOR_HOST points at it."""
    with emulators.start_pubsub() as emulator, pytest.MonkeyPatch.context() as env:
        env.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        yield emulator.host


@pytest.fixture(scope="session")
def _firestore_client(firestore_emulator):
    # One client (one gRPC channel) for the session; each test's store borrows it.
    from google.cloud import firestore
    client = firestore.Client(project=emulators.TEST_PROJECT)
    yield client
    client.close()


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
def store(request, tmp_path):
    """A fresh, empty Store: SQLite on a tmp file, or Firestore on the emulator (reset first)."""
    if request.param == "sqlite":
        from mailbridge.store.sqlite import SqliteStore
        backend = SqliteStore(tmp_path / "store.db")
    else:
        from mailbridge.store.firestore import FirestoreStore
        client = request.getfixturevalue("_firestore_client")
        emulators.reset_firestore(request.getfixturevalue("firestore_emulator"))
        backend = FirestoreStore(project=emulators.TEST_PROJECT, client=client)
    yield backend
    backend.close()
