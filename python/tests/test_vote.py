"""Voting over neighbor arrays and neighbor files: hand-computed lists, and equality with `vismem eval`."""
import math

import numpy as np
import pytest

import vismem
from conftest import cli_error, cli_json, paper_style_file


def test_tie_rules_of_the_spec():
    d = [0.1, 0.2, 0.3, 0.4, 0.5]
    # SPEC section 3 examples (plurality): [0,1,1] -> 1; [0,1] -> 0; [2,3,3,1,1] -> 3.
    assert vismem.vote([0, 1, 1], d[:3], "plurality").tolist() == [0, 0, 1]
    assert vismem.vote([0, 1], d[:2], "plurality").tolist() == [0, 0]
    assert vismem.vote([2, 3, 3, 1, 1], d, "plurality").tolist() == [2, 2, 3, 3, 3]
    # Text labels keep their values and dtype.
    assert vismem.vote(["cat", "dog", "dog"], d[:3], "plurality").tolist() == ["cat", "cat", "dog"]


def test_weights_by_hand():
    labels = ["a", "b", "b", "a"]
    d = [0.10, 0.15, 0.40, 0.45]
    # rank: 1/2 (a), 1/3 (b), 1/4 (b: 7/12 > 1/2 -> b), 1/5 (a: 7/10 > 7/12 -> a)
    assert vismem.vote(labels, d, "rank").tolist() == ["a", "a", "b", "a"]
    # distance: exp(-d): a 0.905, b 0.861 (a), b 0.861+0.670 = 1.531 (b), a 0.905+0.638 = 1.543 (a)
    assert vismem.vote(labels, d, "distance").tolist() == ["a", "a", "b", "a"]
    # softmax T=0.07: exp(0.9/.07) vs exp(.85/.07)+exp(.6/.07): a stays ahead until the third neighbor?
    w = [math.exp((1 - x) / 0.07) for x in d]
    assert w[1] + w[2] < w[0]  # so b never catches up
    assert vismem.vote(labels, d, "softmax").tolist() == ["a", "a", "a", "a"]
    b = vismem.vote_breakdown(labels, d, 3, "rank")
    assert b["prediction"] == "b"
    assert b["scores"] == [("a", 0.5), ("b", pytest.approx(1 / 3 + 1 / 4))]
    np.testing.assert_allclose(b["weights"], [1 / 2, 1 / 3, 1 / 4])
    b = vismem.vote_breakdown(labels, d, 2, "distance", distance_power=2.0)
    np.testing.assert_allclose(b["weights"], [math.exp(-0.2), math.exp(-0.3)])
    b = vismem.vote_breakdown(labels, d, 2, "softmax", temperature=0.5)
    np.testing.assert_allclose(b["weights"], [math.exp(0.9 / 0.5), math.exp(0.85 / 0.5)])


def test_pruning_inputs():
    labels = [["a", "b", "b"]]
    d = [[0.1, 0.2, 0.3]]
    # Hard pruning: the excluded first neighbor counts toward k but adds nothing;
    # before anything is counted the prediction is the first neighbor's label.
    assert vismem.vote(labels, d, "plurality", excluded=[[True, False, False]]).tolist() == [["a", "b", "b"]]
    # Every neighbor excluded: the fallback votes unpruned.
    assert vismem.vote(labels, d, "plurality", excluded=[[1, 1, 1]]).tolist() == [["a", "a", "b"]]
    # Soft pruning: rank weights times rho: a 1/2*1, b 1/3*0.1 + 1/4*0.1.
    assert vismem.vote(labels, d, "rank", reliability=[[1.0, 0.1, 0.1]]).tolist() == [["a", "a", "a"]]
    b = vismem.vote_breakdown(labels[0], d[0], 3, "rank", reliability=[1.0, 0.1, 0.1])
    np.testing.assert_allclose(b["weights"], [0.5, 0.1 / 3, 0.1 / 4])


def test_vote_errors():
    with pytest.raises(ValueError, match="distances: expected shape"):
        vismem.vote([["a", "b"]], [[0.1, 0.2, 0.3]], "rank")
    with pytest.raises(ValueError):
        vismem.vote(["a"], [0.1], "majority")
    with pytest.raises(ValueError, match="NaN"):
        vismem.vote(["a", "b"], [0.1, float("nan")], "rank")
    with pytest.raises(ValueError, match="k must be in 1..2"):
        vismem.vote_breakdown(["a", "b"], [0.1, 0.2], 3)


def test_evaluate_neighbor_file_equals_cli_and_vote_arrays(tmp_path):
    rng = np.random.default_rng(5)
    doc = paper_style_file(tmp_path / "nn.json", rng)
    cli = cli_json("eval", "--neighbors", tmp_path / "nn.json", "--json")
    assert vismem.evaluate(tmp_path / "nn.json") == cli
    assert vismem.evaluate(doc) == cli  # the dict itself
    assert vismem.evaluate(str(tmp_path / "nn.json"), k=10, rules=["rank"])["methods"].keys() == {"rank"}
    # Options, as the CLI's.
    excl = ["train_%d" % i for i in range(0, 1000, 3)]
    (tmp_path / "excl.txt").write_text("\n".join(excl) + "\n")
    cli = cli_json("eval", "--neighbors", tmp_path / "nn.json", "--exclude", tmp_path / "excl.txt", "--k", 20,
                   "--normalize-distances", "--json")
    assert vismem.evaluate(tmp_path / "nn.json", exclude=excl, k=20, normalize_distances=True) == cli
    rel = {"train_%d" % i: 0.25 for i in range(0, 1000, 2)}
    (tmp_path / "rel.tsv").write_text("".join("%s\t%r\n" % kv for kv in rel.items()))
    cli = cli_json("eval", "--neighbors", tmp_path / "nn.json", "--reliability", tmp_path / "rel.tsv", "--json")
    assert vismem.evaluate(tmp_path / "nn.json", reliability=rel) == cli
    # The same numbers from arrays: read_neighbors + vote + accuracy_at_k.
    nb = vismem.read_neighbors(tmp_path / "nn.json")
    assert nb.labels.shape == (60, 30) and nb.distances.dtype == np.float64
    assert nb.query_ids[:2] == ["val_000", "val_001"] and nb.true_labels[0] == [nb.truths[0], str((int(nb.truths[0]) + 1) % 5)]
    plain = vismem.evaluate(tmp_path / "nn.json")
    for rule in vismem.RULES:
        pred = vismem.vote(nb.labels, nb.distances, rule)
        acc = vismem.accuracy_at_k(pred, nb.true_labels)
        assert acc.tolist() == plain["methods"][rule]["accuracy_at_k"]
    excluded = np.isin(nb.ids, excl)
    pred = vismem.vote(nb.labels[:, :20], nb.distances[:, :20], "softmax", excluded=excluded[:, :20],
                       normalize_distances=True)
    want = vismem.evaluate(tmp_path / "nn.json", exclude=excl, k=20, normalize_distances=True)
    assert vismem.accuracy_at_k(pred, nb.true_labels).tolist() == want["methods"]["softmax"]["accuracy_at_k"]


def test_neighbor_file_errors(tmp_path):
    (tmp_path / "bad.json").write_text('{"q": {"neighbor_image_ids": ["a", "b"], "neighbor_classes": [1], '
                                       '"neighbor_distances": [0.1, 0.2], "image_class": 1}}')
    msg = cli_error("eval", "--neighbors", tmp_path / "bad.json")
    with pytest.raises(ValueError) as e:
        vismem.evaluate(tmp_path / "bad.json")
    assert str(e.value) == msg
    msg = cli_error("eval", "--neighbors", tmp_path / "none.json")
    with pytest.raises(OSError) as e:
        vismem.evaluate(tmp_path / "none.json")
    assert str(e.value) == msg
    with pytest.raises(FileNotFoundError):
        vismem.read_neighbors(tmp_path / "none.json")
