"""The Store contract (store/base.py), run against SQLite and the Firestore emulator by the `store` fixture."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from mailbridge import clock
from mailbridge.errors import NotFoundError, StoreUnavailableError
from mailbridge.store import open_store

C = "things"
THREADS = 8
ODD_IDS = ["a/b/c", "100%", "x:y:z", "ünï/cødé ☃", ".", "..", "__x__", "^", "_a", "a.0", ".1/", "😀"]


def past() -> float:
    return clock.now() - 60


def future() -> float:
    return clock.now() + 3600


def wait_until(ts: float) -> None:
    """Wait (briefly) until the store's clock has passed `ts`."""
    while clock.now() <= ts:
        time.sleep(0.02)


def race(n: int, fn):
    """Run fn(i) in n threads released together; the list of their results."""
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:       # re-raised below, so a failing thread fails the test
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# -- single documents ------------------------------------------------------------------------

def test_put_returns_and_stores_document_with_id(store):
    assert store.put(C, "d1", {"a": 1, "n": {"x": [1, "two", None, True]}}) == {
        "id": "d1", "a": 1, "n": {"x": [1, "two", None, True]}}
    assert store.get(C, "d1") == {"id": "d1", "a": 1, "n": {"x": [1, "two", None, True]}}


def test_put_replaces_whole_document_and_id_wins(store):
    store.put(C, "d1", {"a": 1, "b": 2})
    assert store.put(C, "d1", {"c": 3, "id": "other"}) == {"id": "d1", "c": 3}
    assert store.get(C, "d1") == {"id": "d1", "c": 3}


def test_get_absent_is_none_and_collections_are_apart(store):
    store.put(C, "d1", {"a": 1})
    assert store.get(C, "nope") is None
    assert store.get("other", "d1") is None


def test_get_many_returns_live_documents_only(store):
    store.put(C, "a", {"v": 1})
    store.put(C, "b", {"v": 2}, expires_at=future())
    store.put(C, "gone", {"v": 3}, expires_at=past())
    assert store.get_many(C, ["a", "b", "gone", "missing", "a"]) == {
        "a": {"id": "a", "v": 1}, "b": {"id": "b", "v": 2}}
    assert store.get_many(C, []) == {}


def test_expiry_is_kept_out_of_the_document(store):
    store.put(C, "d1", {"a": 1}, expires_at=future())
    assert store.get(C, "d1") == {"id": "d1", "a": 1}
    assert store.query(C) == [{"id": "d1", "a": 1}]


def test_update_sets_fields_and_keeps_others(store):
    store.put(C, "d1", {"a": 1, "b": {"x": 1}})
    assert store.update(C, "d1", {"b": {"y": 2}, "c": None}) == {"id": "d1", "a": 1, "b": {"y": 2}, "c": None}
    assert store.get(C, "d1") == {"id": "d1", "a": 1, "b": {"y": 2}, "c": None}


@pytest.mark.parametrize("expires_at", [None, past()])
def test_update_absent_or_expired_raises_not_found(store, expires_at):
    if expires_at:
        store.put(C, "d1", {"a": 1}, expires_at=expires_at)
    with pytest.raises(NotFoundError):
        store.update(C, "d1", {"a": 2})


def test_update_and_increment_keep_the_expiry(store):
    expires_at = clock.now() + 0.5
    store.put(C, "d1", {"a": 1}, expires_at=expires_at)
    store.update(C, "d1", {"a": 2})
    assert store.increment(C, "d1", "n") == 1
    assert store.get(C, "d1") == {"id": "d1", "a": 2, "n": 1}
    wait_until(expires_at)
    assert store.get(C, "d1") is None


def test_delete_reports_whether_a_live_document_was_there(store):
    store.put(C, "d1", {"a": 1})
    store.put(C, "old", {"a": 1}, expires_at=past())
    assert store.delete(C, "d1") is True
    assert store.get(C, "d1") is None
    assert store.delete(C, "d1") is False
    assert store.delete(C, "old") is False


def test_expired_document_is_absent_everywhere(store):
    store.put(C, "old", {"a": 1}, expires_at=past())
    assert store.get(C, "old") is None
    assert store.get_many(C, ["old"]) == {}
    assert store.query(C) == []
    assert store.query(C, [("a", "==", 1)], order_by="a") == []
    assert store.take(C, "old") is None
    with pytest.raises(NotFoundError):
        store.update(C, "old", {"a": 2})


def test_create_only_if_absent(store):
    assert store.create(C, "k", {"v": 1}) is True
    assert store.create(C, "k", {"v": 2}) is False
    assert store.get(C, "k") == {"id": "k", "v": 1}


def test_create_replaces_an_expired_document(store):
    store.put(C, "k", {"v": 1, "old": True}, expires_at=past())
    assert store.create(C, "k", {"v": 2}, expires_at=future()) is True
    assert store.get(C, "k") == {"id": "k", "v": 2}
    assert store.create(C, "k", {"v": 3}) is False


def test_take_is_single_use(store):
    store.put(C, "s", {"state": "x"}, expires_at=future())
    assert store.take(C, "s") == {"id": "s", "state": "x"}
    assert store.take(C, "s") is None
    assert store.get(C, "s") is None
    assert store.take(C, "never") is None


def test_compare_and_set_moves_only_from_the_expected_value(store):
    assert store.compare_and_set(C, "cur", "pos", None, {"pos": 1}) is True      # absent
    assert store.compare_and_set(C, "cur", "pos", 5, {"pos": 9, "x": 1}) is False
    assert store.get(C, "cur") == {"id": "cur", "pos": 1}                          # unchanged
    assert store.compare_and_set(C, "cur", "pos", None, {"pos": 9}) is False
    assert store.compare_and_set(C, "cur", "pos", True, {"pos": 9}) is False       # True is not 1
    assert store.compare_and_set(C, "cur", "pos", 1, {"pos": 2}) is True
    assert store.get(C, "cur") == {"id": "cur", "pos": 2}


def test_compare_and_set_none_matches_missing_field_null_and_expired(store):
    store.put(C, "a", {"other": 1})
    store.put(C, "b", {"pos": None})
    store.put(C, "c", {"pos": 7}, expires_at=past())
    assert store.compare_and_set(C, "a", "pos", None, {"pos": 1}) is True
    assert store.compare_and_set(C, "b", "pos", None, {"pos": 1}) is True
    assert store.compare_and_set(C, "c", "pos", None, {"pos": 1}, expires_at=future()) is True
    assert [store.get(C, i) for i in "abc"] == [{"id": i, "pos": 1} for i in "abc"]


def test_compare_and_set_on_a_dotted_field(store):
    store.put(C, "cur", {"gmail": {"history_id": "10"}})
    assert store.compare_and_set(C, "cur", "gmail.history_id", "9", {"gmail": {"history_id": "11"}}) is False
    assert store.compare_and_set(C, "cur", "gmail.history_id", "10", {"gmail": {"history_id": "11"}}) is True
    assert store.get(C, "cur") == {"id": "cur", "gmail": {"history_id": "11"}}


def test_compare_and_set_writes_the_given_expiry(store):
    assert store.compare_and_set(C, "cur", "pos", None, {"pos": 1}, expires_at=past()) is True
    assert store.get(C, "cur") is None


def test_increment_creates_then_counts(store):
    assert store.increment(C, "rl", "count") == 1
    assert store.increment(C, "rl", "count", 5) == 6
    assert store.increment(C, "rl", "other", -2) == -2
    assert store.get(C, "rl") == {"id": "rl", "count": 6, "other": -2}


def test_increment_restarts_an_expired_counter_with_the_new_expiry(store):
    store.put(C, "rl", {"count": 41, "stale": True}, expires_at=past())
    assert store.increment(C, "rl", "count", expires_at=future()) == 1
    assert store.get(C, "rl") == {"id": "rl", "count": 1}
    store.put(C, "rl2", {"count": 1})
    assert store.increment(C, "rl3", "count", expires_at=past()) == 1    # created already expired
    assert store.get(C, "rl3") is None


def test_increment_refuses_a_non_integer_field(store):
    store.put(C, "rl", {"count": "three"})
    with pytest.raises(ValueError):
        store.increment(C, "rl", "count")
    assert store.get(C, "rl") == {"id": "rl", "count": "three"}


@pytest.mark.parametrize("doc_id", ODD_IDS)
def test_any_string_id_works(store, doc_id):
    assert store.create(C, doc_id, {"v": 1}) is True
    assert store.get(C, doc_id) == {"id": doc_id, "v": 1}
    assert store.get_many(C, [doc_id]) == {doc_id: {"id": doc_id, "v": 1}}
    assert store.query(C, [("v", "==", 1)]) == [{"id": doc_id, "v": 1}]
    assert store.update(C, doc_id, {"w": 2}) == {"id": doc_id, "v": 1, "w": 2}
    assert store.take(C, doc_id) == {"id": doc_id, "v": 1, "w": 2}
    assert store.get(C, doc_id) is None


def test_odd_ids_sort_and_page_as_python_strings(store):
    ids = ODD_IDS + ["a", "a/", "a-b", "a0", "b", "A", "~", "_", "^^"]
    for doc_id in ids:
        store.put(C, doc_id, {"k": 1})
    assert [d["id"] for d in store.query(C)] == sorted(ids)
    assert [d["id"] for d in store.query(C, descending=True)] == sorted(ids, reverse=True)
    assert [d["id"] for d in store.query(C, [("k", "==", 1)], order_by="k")] == sorted(ids)
    after = sorted(ids)[4]
    assert [d["id"] for d in store.query(C, start_after=(None, after), limit=3)] == sorted(ids)[5:8]


# -- queries ---------------------------------------------------------------------------------

SAMPLE = {
    "a": {"n": 1, "s": "x", "b": True, "nested": {"k": 1}, "tag": "red"},
    "b": {"n": 2, "s": "y", "b": False, "nested": {"k": 2}, "tag": None},
    "c": {"n": 3, "s": "z", "nested": {"k": 3}},
    "d": {"n": 2.5, "s": "y"},
    "e": {"n": "3", "s": None},
    "f": {"n": True},
    "g": {},
}


def seed(store, docs=SAMPLE):
    for doc_id, data in docs.items():
        store.put(C, doc_id, data)
    store.put(C, "zz-expired", {"n": 2, "s": "y", "tag": None, "nested": {"k": 2}}, expires_at=past())


@pytest.mark.parametrize("where, expected", [
    ([("n", "==", 2)], "b"),
    ([("n", "==", 2.5)], "d"),
    ([("n", "==", 1)], "a"),                         # True is not 1
    ([("n", "!=", 2)], "acdef"),                     # never a missing field or null
    ([("n", "<", 3)], "abd"),                        # numbers compare with numbers only
    ([("n", "<=", 3)], "abcd"),
    ([("n", ">", 1)], "bcd"),
    ([("n", ">=", 2.5)], "cd"),
    ([("n", "in", [1, 3, "3"])], "ace"),
    ([("n", "in", [])], ""),
    ([("s", "==", None)], "e"),                      # a present null
    ([("tag", "==", None)], "b"),
    ([("s", "!=", None)], "abcd"),
    ([("s", "<", "y")], "a"),
    ([("s", ">=", "y")], "bcd"),
    ([("nested.k", ">=", 2)], "bc"),
    ([("nested.k", "==", 1)], "a"),
    ([("b", "==", True)], "a"),
    ([("b", "==", False)], "b"),
    ([("b", "<", True)], "b"),
    ([("s", "==", "y"), ("n", ">", 2)], "d"),
    ([("s", "in", ["x", "y"]), ("n", "<", 2.5)], "ab"),
])
def test_query_filters(store, where, expected):
    seed(store)
    assert [d["id"] for d in store.query(C, where)] == list(expected)


@pytest.mark.parametrize("where", [
    [("n", "~", 1)], [("n", "<", None)], [("n", "in", [None])], [("n", "in", list(range(31)))],
    [("bad-name", "==", 1)], [("a..b", "==", 1)], [("n", "==", {"x": 1})],
])
def test_query_refuses_bad_filters(store, where):
    with pytest.raises(ValueError):
        store.query(C, where)


def test_query_orders_values_of_mixed_types_as_firestore_does(store):
    seed(store)
    # null < bool < numbers < strings; documents without the field are left out
    assert [d["id"] for d in store.query(C, order_by="n")] == list("fabdce")
    assert [d["id"] for d in store.query(C, order_by="n", descending=True)] == list("ecdbaf")
    assert [d["id"] for d in store.query(C, order_by="s")] == list("eabdc")
    assert [d["id"] for d in store.query(C, order_by="nested.k", descending=True)] == list("cba")
    assert [d["id"] for d in store.query(C, order_by="n", limit=2)] == list("fa")


def test_query_breaks_ties_by_id_in_the_same_direction(store):
    for doc_id in ["p3", "p1", "p5", "p2", "p4"]:
        store.put(C, doc_id, {"rank": 1, "odd": int(doc_id[1]) % 2})
    assert [d["id"] for d in store.query(C, order_by="rank")] == ["p1", "p2", "p3", "p4", "p5"]
    assert [d["id"] for d in store.query(C, order_by="rank", descending=True)] == ["p5", "p4", "p3", "p2", "p1"]
    assert [d["id"] for d in store.query(C, [("odd", "==", 1)], order_by="rank", limit=2)] == ["p1", "p3"]


PAGING_DOCS = {f"m{i:02d}": {"at": i % 7, "conn": "c1" if i % 3 else "c2", "n": i} for i in range(40)}


@pytest.mark.parametrize("where, order_by", [
    ([], None), ([], "at"), ([("conn", "==", "c1")], "at"), ([("at", ">", 1)], "at"),
    ([("n", ">=", 5)], "at"),      # inequality on another field than the order
    ([("n", "!=", 7)], None),
])
@pytest.mark.parametrize("descending", [False, True])
def test_start_after_pages_through_every_result_exactly_once(store, where, order_by, descending):
    seed(store, PAGING_DOCS)
    for i in range(0, 40, 4):       # expired documents interleaved, which pages must skip
        store.put(C, f"m{i:02d}x", {"at": 3, "conn": "c1", "n": 50}, expires_at=past())
    everything = store.query(C, where, order_by=order_by, descending=descending)
    pages, after = [], None
    while True:
        page = store.query(C, where, order_by=order_by, descending=descending, limit=6, start_after=after)
        pages += page
        if len(page) < 6:
            break
        after = (page[-1][order_by] if order_by else None, page[-1]["id"])
    assert [d["id"] for d in pages] == [d["id"] for d in everything]
    assert len(everything) == len({d["id"] for d in everything}) > 6
    assert not any(d["id"].endswith("x") for d in everything)
    key = (lambda d: (d[order_by], d["id"])) if order_by else (lambda d: d["id"])
    assert [key(d) for d in everything] == sorted(map(key, everything), reverse=descending)


# -- races: exactly-once under concurrent callers --------------------------------------------

def test_racing_compare_and_set_has_one_winner_per_step(store):
    store.put(C, "cur", {"pos": 0})
    step = threading.Barrier(THREADS)

    def advance(i: int) -> list[bool]:
        won = []
        for pos in range(10):      # every thread tries each step from the same expected value
            step.wait()
            won.append(store.compare_and_set(C, "cur", "pos", pos, {"pos": pos + 1, "by": i}))
        return won
    won = race(THREADS, advance)
    assert [sum(per_thread[pos] for per_thread in won) for pos in range(10)] == [1] * 10
    assert store.get(C, "cur") == {"id": "cur", "pos": 10, "by": [w[9] for w in won].index(True)}


def test_racing_create_has_one_winner(store):
    created = race(THREADS, lambda i: store.create(C, "dedupe", {"by": i}, expires_at=future()))
    assert created.count(True) == 1
    assert store.get(C, "dedupe") == {"id": "dedupe", "by": created.index(True)}


def test_racing_take_gives_the_document_once(store):
    store.put(C, "state", {"v": 1}, expires_at=future())
    taken = race(THREADS, lambda i: store.take(C, "state"))
    assert [t for t in taken if t is not None] == [{"id": "state", "v": 1}]


def test_racing_increments_all_count(store):
    counts = race(THREADS, lambda i: [store.increment(C, "rl", "n", expires_at=future()) for _ in range(5)])
    assert sorted(n for per_thread in counts for n in per_thread) == list(range(1, 5 * THREADS + 1))
    assert store.get(C, "rl") == {"id": "rl", "n": 5 * THREADS}


RACER = """
import sys
from mailbridge.store.sqlite import SqliteStore
store = SqliteStore(sys.argv[1])
sys.stdin.readline()                      # start together
won = sum(store.create("things", f"k{i}", {"by": sys.argv[2]}) for i in range(100))
for _ in range(50):
    store.increment("things", "counter", "n")
print(won)
"""


def test_sqlite_processes_racing_create_and_increment(tmp_path):
    path = str(tmp_path / "deep" / "shared.db")
    procs = [subprocess.Popen([sys.executable, "-c", RACER, path, str(i)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate("go\n", timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert sum(int(out) for out in outs) == 100
    store = open_store(f"sqlite:///{path}")
    assert store.get(C, "counter") == {"id": "counter", "n": 150}
    assert len(store.get_many(C, [f"k{i}" for i in range(100)])) == 100
    store.close()


# -- opening, errors, backend details --------------------------------------------------------

def test_open_store_sqlite_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel/local.db")
    relative.put(C, "a", {"v": 1})
    relative.close()
    assert (tmp_path / "rel" / "local.db").exists()
    absolute = open_store(f"sqlite:///{tmp_path}/rel/local.db")     # four slashes: absolute
    assert absolute.get(C, "a") == {"id": "a", "v": 1}
    absolute.close()


@pytest.mark.parametrize("url", ["", "postgres://x", "sqlite://", "sqlite:///", "memory"])
def test_open_store_refuses_unknown_urls_naming_the_variable(url):
    with pytest.raises(ValueError, match="MAILBRIDGE_STORE"):
        open_store(url)


@pytest.mark.firestore
def test_open_store_firestore_url_names_the_project(firestore_emulator):
    from tests.emulators import reset_firestore
    reset_firestore(firestore_emulator, "mailbridge-other")
    mine = open_store("firestore://mailbridge-other")
    default_db = open_store("firestore://mailbridge-other/(default)")
    other = open_store("firestore://mailbridge-test")
    mine.put(C, "a", {"v": 1})
    assert default_db.get(C, "a") == {"id": "a", "v": 1}
    assert other.get(C, "a") is None
    for s in (mine, default_db, other):
        s.close()


def test_importing_the_store_package_does_not_import_firestore():
    code = ("import sys, mailbridge.store, mailbridge.store.sqlite; "
            "print(any(m.startswith('google.cloud.firestore') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sqlite_errors_are_store_unavailable(tmp_path):
    (tmp_path / "a-directory.db").mkdir()
    store = open_store(f"sqlite:///{tmp_path}/a-directory.db")
    with pytest.raises(StoreUnavailableError):
        store.get(C, "a")


@pytest.mark.firestore
def test_firestore_keeps_the_expiry_in_a_ttl_timestamp(firestore_emulator):
    from google.cloud import firestore
    from mailbridge.store.firestore import FirestoreStore, encode_id
    client = firestore.Client(project="mailbridge-test")
    store = FirestoreStore(project="mailbridge-test", client=client)
    expires_at = future()
    store.put(C, "a/b", {"v": 1}, expires_at=expires_at)
    raw = client.collection(C).document(encode_id("a/b")).get().to_dict()
    assert raw["ttl"].timestamp() == pytest.approx(expires_at, abs=0.001)
    assert store.get(C, "a/b") == {"id": "a/b", "v": 1}
    with pytest.raises(ValueError, match="ttl"):
        store.put(C, "b", {"ttl": 5})
    client.close()


@pytest.mark.parametrize("doc_id", ODD_IDS + ["plain-id_123:x"])
def test_firestore_id_encoding_is_valid_and_reversible(doc_id):
    from mailbridge.store.firestore import decode_id, encode_id
    encoded = encode_id(doc_id)
    assert "/" not in encoded and encoded not in (".", "..")
    assert not (encoded.startswith("__") and encoded.endswith("__"))
    assert decode_id(encoded) == doc_id
    if doc_id == "plain-id_123:x":
        assert encoded == doc_id                 # ordinary ids stay readable in the console
