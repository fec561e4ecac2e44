"""The shared emulator fixtures: Pub/Sub starts, serves the real client, and resets to empty."""
from __future__ import annotations

import os

import pytest

from tests import emulators


@pytest.mark.pubsub
def test_pubsub_emulator_serves_the_client_and_resets(pubsub_emulator):
    from google.cloud import pubsub_v1
    assert os.environ["PUBSUB_EMULATOR_HOST"] == pubsub_emulator
    emulators.reset_pubsub(pubsub_emulator)  # the emulator is shared by the session's tests
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(emulators.TEST_PROJECT, "emulator-check")
    publisher.create_topic(name=topic)
    listed = lambda: [t.name for t in publisher.list_topics(request={"project": f"projects/{emulators.TEST_PROJECT}"})]
    assert listed() == [topic]
    emulators.reset_pubsub(pubsub_emulator)
    assert listed() == []


@pytest.mark.firestore
def test_firestore_emulator_reset_empties_the_project(firestore_emulator):
    from google.cloud import firestore
    assert os.environ["FIRESTORE_EMULATOR_HOST"] == firestore_emulator
    client = firestore.Client(project=emulators.TEST_PROJECT)
    client.collection("c").document("d").set({"a": 1})
    assert client.collection("c").document("d").get().exists
    emulators.reset_firestore(firestore_emulator)
    assert not client.collection("c").document("d").get().exists
    client.close()


def test_a_stopped_emulator_leaves_no_process_behind():
    emulator = emulators.start_pubsub()
    pgid = emulator.process.pid
    emulator.stop()
    alive = [p for p in os.listdir("/proc") if p.isdigit() and _pgid(p) == pgid and not _zombie(p)]
    assert alive == []


def _pgid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def _zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
