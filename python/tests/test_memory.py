"""vismem.Memory: round trips, exactness against numpy and the CLI, errors, unlearning, coherence."""
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import vismem
from conftest import cli_error, cli_json, run_cli, unit_rows, write_lines


def brute_force(x, q, k):
    """Expected neighbors: cosine distance in float64, ties by insertion order (stable sort)."""
    xn = x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    qn = q / np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
    dist = 1.0 - qn.astype(np.float64) @ xn.astype(np.float64).T
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


def test_create_add_search_matches_numpy_brute_force(tmp_path, data):
    mem = vismem.Memory.create(tmp_path / "m.db", dim=data["d"], model_id="toy")
    r = mem.add(data["ids"], data["labels"], data["x"])
    assert r == {"added": 300, "replaced": 0, "skipped": 0}
    assert len(mem) == 300 and mem.dim == data["d"]
    res = mem.search(data["q"], k=15)
    order, dist = brute_force(data["x"], data["q"], 15)
    assert res.shape == (40, 15)
    assert res.distances.dtype == np.float32 and res.seq.dtype == np.int64
    np.testing.assert_array_equal(res.ids, np.array(data["ids"], dtype=object)[order])
    np.testing.assert_array_equal(res.labels, np.array(data["labels"], dtype=object)[order])
    np.testing.assert_array_equal(res.seq, order + 1)  # seq starts at 1, in insertion order
    np.testing.assert_allclose(res.distances, dist, atol=2e-6)
    assert res[3][0] == (res.ids[3, 0], res.labels[3, 0], pytest.approx(float(res.distances[3, 0])), int(res.seq[3, 0]))
    # One query as a 1-D array: the same neighbors as its row in the batch.
    one = mem.search(data["q"][7], k=15)
    np.testing.assert_array_equal(one.ids[0], res.ids[7])


def test_reopen_round_trip_and_stored_embeddings(tmp_path, data):
    path = tmp_path / "m.db"
    with vismem.Memory.create(path, dim=data["d"]) as mem:
        mem.add(data["ids"][:10], data["labels"][:10], data["x"][:10].astype(np.float64))  # float64 is converted
    assert mem.closed
    with pytest.raises(ValueError, match="memory is closed"):
        len(mem)
    again = vismem.Memory.open(str(path))
    assert len(again) == 10 and "item003" in again and "nope" not in again
    e = again.embedding("item003")
    want = data["x"][3] / np.linalg.norm(data["x"][3].astype(np.float64))
    assert e.dtype == np.float32 and e.shape == (data["d"],)
    np.testing.assert_allclose(e, want, atol=1e-7)
    assert again.item("item003") == {"seq": 4, "id": "item003", "label": data["labels"][3], "reliability": 1.0,
                                     "wrong": 0, "correct": 0}
    assert again.item("nope") is None
    cols = again.items()
    assert cols["ids"] == data["ids"][:10] and list(cols["seq"]) == list(range(1, 11))
    assert again.labels() == sorted(set(data["labels"][:10]))


def test_search_is_bit_identical_to_cli(tmp_path, mem_path, data):
    np.save(tmp_path / "q.npy", data["q"])
    qids = ["query%d" % i for i in range(40)]
    write_lines(tmp_path / "qids.txt", qids)
    write_lines(tmp_path / "qlab.txt", data["q_labels"])
    run_cli("search", mem_path, "--embeddings", tmp_path / "q.npy", "--ids", tmp_path / "qids.txt", "--labels",
            tmp_path / "qlab.txt", "--k", 25, "--out", tmp_path / "cli.json")
    mem = vismem.Memory.open(mem_path)
    res = mem.search(data["q"], k=25)
    res.write(tmp_path / "py.json", query_ids=qids, true_labels=data["q_labels"])
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    cli = json.loads((tmp_path / "cli.json").read_text())
    assert res.to_dict(query_ids=qids, true_labels=data["q_labels"]) == cli
    # float32 distances are the same bits the file holds (as float32 -> double).
    np.testing.assert_array_equal(res.distances.astype(np.float64),
                                  np.array([cli[q]["neighbor_distances"] for q in qids]))
    # Leave-one-out, as `search --exclude-self`.
    write_lines(tmp_path / "sids.txt", data["ids"][:40])
    np.save(tmp_path / "self.npy", data["x"][:40])
    run_cli("search", mem_path, "--embeddings", tmp_path / "self.npy", "--ids", tmp_path / "sids.txt", "--k", 10,
            "--exclude-self", "--out", tmp_path / "cli_self.json")
    loo = mem.search(data["x"][:40], k=10, self_ids=data["ids"][:40])
    assert not any(data["ids"][i] in loo.ids[i] for i in range(40))
    loo.write(tmp_path / "py_self.json", query_ids=data["ids"][:40])
    assert (tmp_path / "py_self.json").read_bytes() == (tmp_path / "cli_self.json").read_bytes()


def test_classify_evaluate_info_equal_cli(tmp_path, mem_path, data):
    np.save(tmp_path / "q.npy", data["q"])
    write_lines(tmp_path / "qlab.txt", data["q_labels"])
    mem = vismem.Memory.open(mem_path)
    for vote in vismem.RULES:
        cli = cli_json("classify", mem_path, "--embeddings", tmp_path / "q.npy", "--k", 9, "--vote", vote, "--json")
        assert mem.classify(data["q"], k=9, vote=vote) == cli
    assert mem.classify(data["q"][0], k=9)["query"] == "q0"  # one query: one dict
    cli = cli_json("eval", mem_path, "--embeddings", tmp_path / "q.npy", "--labels", tmp_path / "qlab.txt", "--k", 30,
                   "--json")
    assert mem.evaluate(data["q"], data["q_labels"], k=30) == cli
    assert mem.info == cli_json("info", mem_path, "--json")


def test_prune_equals_cli_and_changes_votes_as_cli(tmp_path, mem_path, data):
    cli_copy = tmp_path / "cli_copy.db"
    run_cli("create", cli_copy, "--dim", data["d"])
    np.save(tmp_path / "x.npy", data["x"])
    run_cli("add", cli_copy, "--embeddings", tmp_path / "x.npy", "--labels", tmp_path / "l.txt", "--ids",
            tmp_path / "i.txt")
    run_cli("prune", cli_copy, "--k", 10, "--mode", "soft", "--out", tmp_path / "counts.tsv")
    mem = vismem.Memory.open(mem_path)
    r = mem.prune(k=10, mode="soft")
    assert r["k"] == 10 and r["recomputed"] and r["mode"] == "soft"
    rows = [line.split("\t") for line in (tmp_path / "counts.tsv").read_text().splitlines()]
    assert r["ids"] == [row[0] for row in rows]
    assert r["wrong"].tolist() == [int(row[1]) for row in rows]
    assert r["correct"].tolist() == [int(row[2]) for row in rows]
    assert r["wrong"].sum() > 0  # the toy classes overlap: some neighbors are wrong
    assert mem.prune(k=10)["recomputed"] is False  # current counts are kept
    np.save(tmp_path / "q.npy", data["q"])
    cli = cli_json("classify", cli_copy, "--embeddings", tmp_path / "q.npy", "--k", 20, "--vote", "rank", "--json")
    assert mem.classify(data["q"], k=20) == cli
    rel = mem.items()["reliability"]
    assert np.all(rel[r["wrong"] == 0] == 1.0)
    np.testing.assert_array_equal(rel[r["wrong"] > 0], 1.75 / (1 + r["wrong"][r["wrong"] > 0]))
    hard = mem.prune(mode="hard", threshold=3)
    assert hard["excluded"] == int((hard["wrong"] >= 3).sum())


def test_errors_are_python_exceptions_with_the_cli_message(tmp_path, mem_path, data):
    mem = vismem.Memory.open(mem_path)
    np.save(tmp_path / "one.npy", data["x"][:1])
    write_lines(tmp_path / "dup_id.txt", ["item000"])
    write_lines(tmp_path / "one_label.txt", ["c0"])
    msg = cli_error("add", mem_path, "--embeddings", tmp_path / "one.npy", "--labels", tmp_path / "one_label.txt",
                    "--ids", tmp_path / "dup_id.txt")
    with pytest.raises(ValueError) as e:
        mem.add(["item000"], ["c0"], data["x"][:1])
    assert str(e.value) == msg
    msg = cli_error("remove", mem_path, "--id", "no-such-item")
    with pytest.raises(ValueError) as e:
        mem.remove("no-such-item")
    assert str(e.value) == msg
    msg = cli_error("info", tmp_path / "missing.db")
    with pytest.raises(FileNotFoundError) as e:
        vismem.Memory.open(tmp_path / "missing.db")
    assert str(e.value) == msg
    msg = cli_error("create", mem_path, "--dim", 4)
    with pytest.raises(FileExistsError) as e:
        vismem.Memory.create(mem_path, dim=4)
    assert str(e.value) == msg
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    msg = cli_error("info", tmp_path / "junk.db")
    with pytest.raises(OSError) as e:
        vismem.Memory.open(tmp_path / "junk.db")
    assert str(e.value) == msg and not isinstance(e.value, FileNotFoundError)
    bad = data["x"][:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="row 1 has a NaN"):
        mem.add(["n1", "n2"], ["a", "b"], bad)
    with pytest.raises(ValueError, match="columns, the memory's dimension is 24"):
        mem.search(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="expected a float array"):
        mem.search(np.ones((2, 24), np.int64))
    with pytest.raises(ValueError, match="2 ids but x has 3 rows"):
        mem.add(["a", "b"], ["x", "y"], data["x"][:3])
    with pytest.raises(ValueError, match="k must be >= 1"):
        mem.search(data["q"], k=0)
    with pytest.raises(ValueError, match="unknown|vote"):
        mem.classify(data["q"], vote="majority")
    with pytest.raises(ValueError, match="give dim=D"):
        vismem.Memory.create(tmp_path / "nodim.db")
    assert len(mem) == 300  # nothing was written by the failed calls


def test_add_modes(tmp_path, data):
    mem = vismem.Memory.create(tmp_path / "m.db", dim=data["d"])
    mem.add(data["ids"][:5], data["labels"][:5], data["x"][:5])
    r = mem.add(data["ids"][3:8], ["new"] * 5, data["x"][3:8], mode="skip_existing")
    assert r == {"added": 3, "replaced": 0, "skipped": 2}
    assert mem.item("item003")["label"] == data["labels"][3]
    r = mem.add(["item000"], ["moved"], data["x"][:1], mode="upsert")
    assert r == {"added": 0, "replaced": 1, "skipped": 0}
    assert mem.item("item000")["label"] == "moved" and mem.item("item000")["seq"] > mem.item("item007")["seq"]
    with pytest.raises(ValueError, match="mode must be"):
        mem.add(["z"], ["z"], data["x"][:1], mode="merge")


def test_remove_is_unlearning(tmp_path, data):
    """After remove: the same answers as a memory that never had the items, and no bytes left."""
    gone = ["item%03d" % i for i in (5, 17, 99)]
    keep = [i for i, id_ in enumerate(data["ids"]) if id_ not in gone]
    mem = vismem.Memory.create(tmp_path / "m.db", dim=data["d"])
    mem.add(data["ids"], data["labels"], data["x"])
    marker = mem.embedding("item017").tobytes()
    assert mem.remove(gone) == 3 and len(mem) == 297
    never = vismem.Memory.create(tmp_path / "never.db", dim=data["d"])
    never.add([data["ids"][i] for i in keep], [data["labels"][i] for i in keep], data["x"][keep])
    a, b = mem.search(data["q"], k=50), never.search(data["q"], k=50)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.distances, b.distances)
    assert mem.classify(data["q"], k=20) == never.classify(data["q"], k=20)
    for f in tmp_path.glob("m.db*"):
        assert marker not in f.read_bytes(), f
    assert mem.remove_label("c3") == len([i for i in keep if data["labels"][i] == "c3"])
    assert "c3" not in mem.labels()


def test_other_processes_see_writes_and_are_seen(tmp_path, mem_path, data):
    mem = vismem.Memory.open(mem_path)
    gen = mem.info["generation"]
    # The CLI removes an item while this handle is open: the next search does not return it.
    first = mem.search(data["x"][0], k=1).ids[0, 0]
    assert first == "item000"
    run_cli("remove", mem_path, "--id", "item000")
    assert "item000" not in mem and len(mem) == 299
    assert mem.search(data["x"][0], k=1).ids[0, 0] != "item000"
    assert mem.info["generation"] == gen + 1
    # A write from this handle is visible to the CLI.
    mem.add(["fresh"], ["c9"], data["q"][:1])
    write_lines(tmp_path / "fid.txt", ["f"])
    np.save(tmp_path / "f.npy", data["q"][:1])
    run_cli("search", mem_path, "--embeddings", tmp_path / "f.npy", "--k", 1, "--out", tmp_path / "f.json")
    assert json.loads((tmp_path / "f.json").read_text())["q0"]["neighbor_image_ids"] == ["fresh"]
    # Another Python process adds; this handle sees it.
    code = ("import sys, numpy as np, vismem; m = vismem.Memory.open(sys.argv[1]); "
            "m.add(['other'], ['c8'], -np.ones((1, %d), np.float32))" % data["d"])
    subprocess.run([sys.executable, "-c", code, str(mem_path)], check=True)
    assert "other" in mem
    assert mem.search(-np.ones(data["d"], np.float32), k=1).ids[0, 0] == "other"


def test_threads_search_concurrently_with_the_gil_released(tmp_path):
    rng = np.random.default_rng(3)
    x = unit_rows(rng, 20000, 128)
    mem = vismem.Memory.create(tmp_path / "big.db", dim=128)
    mem.add(["i%d" % i for i in range(len(x))], ["l%d" % (i % 10) for i in range(len(x))], x)
    q = unit_rows(rng, 3000, 128)
    want = mem.search(q, k=10, threads=1)
    # While a search runs in another thread, this thread keeps running Python code.
    ticks, span = [], {}

    def worker():
        span["start"] = time.perf_counter()
        span["res"] = mem.search(q, k=10, threads=1)
        span["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
    t.join()
    inside = [s for s in ticks if span["start"] < s < span["end"]]
    assert span["end"] - span["start"] > 0.02
    assert len(inside) > 100, "the main thread was blocked during search (GIL held)"
    np.testing.assert_array_equal(span["res"].ids, want.ids)
    # Several threads on one handle, with a writer in between: every answer is one of the two states.
    results = []
    threads = [threading.Thread(target=lambda: results.append(mem.search(q[:200], k=5).ids)) for _ in range(4)]
    for th in threads:
        th.start()
    mem.add(["late"], ["l0"], q[:1])
    for th in threads:
        th.join()
    after = mem.search(q[:200], k=5).ids
    before = want.ids[:200, :5]
    assert len(results) == 4
    for r in results:
        assert np.array_equal(r, before) or np.array_equal(r, after)


def test_approximate_index_answers_with_exact_distances(tmp_path):
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(8, 24)).astype(np.float32)
    x = centers[np.arange(2000) % 8] + 0.5 * rng.normal(size=(2000, 24)).astype(np.float32)
    ids = [f"i{i}" for i in range(2000)]
    labels = [f"c{i % 8}" for i in range(2000)]
    with vismem.Memory.create(tmp_path / "m.db", dim=24, index="IVF8,Flat", index_fold_rows=500) as m:
        m.add(ids, labels, x)
        info = m.index_info()
        assert info["built"] and info["entries"] == 2000 and info["kind"] == "ivf"
        q = x[:16] + 0.01
        exact = m.search(q, k=10, exact=True)
        every_list = m.search(q, k=10, nprobe=8)  # all lists probed: the exact answers, bit for bit
        np.testing.assert_array_equal(every_list.distances, exact.distances)
        np.testing.assert_array_equal(every_list.ids, exact.ids)
        one = m.search(q, k=10, nprobe=1)
        # Fewer lists: maybe other neighbors, but each distance is the exact one.
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        for i in range(16):
            for j, item in enumerate(one.ids[i]):
                want = 1.0 - float(np.dot(qn[i].astype(np.float64), xn[int(item[1:])].astype(np.float64)))
                assert abs(float(one.distances[i, j]) - want) < 1e-5
        m.remove(["i0", "i1"])
        assert m.index_info()["entries"] == 1998
        assert "i0" not in m.search(x[0], k=5, nprobe=8).ids[0]
        assert m.set_index("Flat") is False and m.index_info() is None
        with pytest.raises(ValueError):
            m.set_index("IVF8,NoSuchCodec")
