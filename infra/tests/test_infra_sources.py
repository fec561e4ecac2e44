"""Source objects named by content hash (redeploy on change, not otherwise); Firestore TTL and indexes."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_program
from mailbridge_infra.firestore import INDEXES, TTL_COLLECTIONS, TTL_FIELD
from mailbridge_infra.routes import FUNCTIONS, deployed_name

OBJECT = "gcp:storage/bucketObject:BucketObject"
FUNCTION = "gcp:cloudfunctionsv2/function:Function"


@pytest.fixture()
def sources(tmp_path) -> Path:
    """A copy of the packaged sources (functions/ and shared/mailbridge/) that a test may edit."""
    shutil.copytree(REPO / "functions", tmp_path / "functions",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "shared" / "mailbridge", tmp_path / "shared" / "mailbridge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def object_names(root: Path) -> dict[str, str]:
    d = run_program({"mailbridge:sourceRoot": str(root)})
    names = {r.inputs["name"].split("/")[0]: r.inputs["name"] for r in d.of_type(OBJECT)}
    # Each function is built from exactly the object uploaded for it.
    for f in d.of_type(FUNCTION):
        assert f.inputs["buildConfig"]["source"]["storageSource"]["object"] == names[f.inputs["name"]]
    return names


def test_object_names_carry_the_archive_hash_and_stay_put_when_nothing_changes(sources):
    first = object_names(sources)
    assert set(first) == {deployed_name(f) for f in FUNCTIONS}
    assert all(re.fullmatch(r"[a-z-]+/[0-9a-f]{64}\.zip", n) for n in first.values())
    (sources / "shared" / "mailbridge" / "__pycache__").mkdir(exist_ok=True)
    (sources / "shared" / "mailbridge" / "__pycache__" / "errors.cpython-311.pyc").write_bytes(b"junk")
    assert object_names(sources) == first


def test_changing_a_function_redeploys_only_that_function(sources):
    before = object_names(sources)
    main = sources / "functions" / "send" / "main.py"
    main.write_text(main.read_text() + "\n# changed\n")
    after = object_names(sources)
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {deployed_name("send")}


def test_changing_the_shared_library_redeploys_every_function(sources):
    before = object_names(sources)
    errors = sources / "shared" / "mailbridge" / "errors.py"
    errors.write_text(errors.read_text() + "\n# changed\n")
    after = object_names(sources)
    assert all(before[n] != after[n] for n in before)


def test_every_expiring_collection_has_a_ttl_policy(deployment):
    fields = {(f.inputs["collection"], f.inputs["field"]): f.inputs
              for f in deployment.of_type("gcp:firestore/field:Field")}
    for collection in TTL_COLLECTIONS:
        assert "ttlConfig" in fields[(collection, TTL_FIELD)], collection
    from mailbridge.store.firestore import TTL_FIELD as STORE_TTL_FIELD

    assert TTL_FIELD == STORE_TTL_FIELD == "ttl"


def test_ttl_collections_are_the_ones_the_store_marks_as_expiring():
    """store/base.py comments each expiring collection with "# TTL"; the two lists must agree."""
    base = (REPO / "shared" / "mailbridge" / "store" / "base.py").read_text()
    marked = set(re.findall(r'^[A-Z_]+ = "([a-z_]+)"\s+# TTL', base, flags=re.M))
    assert marked, "store/base.py no longer marks TTL collections"
    assert marked == set(TTL_COLLECTIONS)


def test_declared_composite_indexes_are_deployed(deployment):
    from mailbridge.store.base import COLLECTIONS

    deployed = {(i.inputs["collection"], tuple((f["fieldPath"], f["order"]) for f in i.inputs["fields"]))
                for i in deployment.of_type("gcp:firestore/index:Index")}
    assert deployed == {(c, fields) for c, fields in INDEXES}
    assert all(c in COLLECTIONS for c, _ in INDEXES)
    db = deployment.named("gcp:firestore/database:Database", name="(default)")
    assert db.inputs["type"] == "FIRESTORE_NATIVE"


def test_an_existing_database_is_used_not_created():
    d = run_program({"mailbridge:firestoreDatabaseExists": "true"})
    assert not d.of_type("gcp:firestore/database:Database")
    fields = d.of_type("gcp:firestore/field:Field")
    assert {f.inputs["collection"] for f in fields} == set(TTL_COLLECTIONS)
    assert all(f.inputs["database"] == "(default)" for f in fields + d.of_type("gcp:firestore/index:Index"))
