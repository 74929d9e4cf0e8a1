"""Encoders and a small end-to-end image case with the default encoder (MobileNet V1), against the CLI."""
import os

import numpy as np
import pytest

import vismem
from conftest import MODEL, SHARED, cli_error, cli_json, run_cli

DATA = SHARED / "data" / "imagenette2"
CLASSES = ["n01440764", "n02102040", "n03888257"]


def images(split, per_class):
    out = []
    for c in CLASSES:
        files = sorted(os.listdir(DATA / split / c))[:per_class]
        out += [(str(DATA / split / c / f), c) for f in files]
    return out


@pytest.fixture(scope="module")
def enc():
    return vismem.load_encoder(MODEL)


def test_encoder_properties(enc):
    assert (enc.name, enc.dim, enc.input_size) == ("mobilenet_v1", 1024, 224)
    assert len(enc.fingerprint) >= 64 and "crop=224" in enc.preprocess
    assert enc.path == str(MODEL)


def test_embed_files_equals_cli_bits(tmp_path, enc):
    paths = [p for p, _ in images("val", 2)]
    run_cli("embed", "--model", MODEL, *paths, "--out", tmp_path / "cli.npy")
    x = enc.embed(paths)
    assert x.dtype == np.float32 and x.shape == (6, 1024) and x.flags.c_contiguous
    np.testing.assert_array_equal(x, np.load(tmp_path / "cli.npy"))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    # One path (str or PathLike): the same bits as the CLI embedding it alone (a batch's
    # size changes the matrix shapes, so the last bits may differ from its row in x).
    run_cli("embed", "--model", MODEL, paths[2], "--out", tmp_path / "one.npy")
    np.testing.assert_array_equal(enc.embed(tmp_path.parent / paths[2]), np.load(tmp_path / "one.npy"))
    assert enc.embed([]).shape == (0, 1024)


def test_embed_pixel_arrays_equal_cli_bits(tmp_path, enc):
    fix = SHARED / "fixtures" / "mobilenet_v1"
    u8 = np.stack([np.load(fix / ("%s.input_u8.npy" % n)) for n in ("bird", "cat", "dragonfly")])
    np.save(tmp_path / "u8.npy", u8)
    run_cli("embed", "--model", MODEL, "--input", tmp_path / "u8.npy", "--out", tmp_path / "u8_cli.npy")
    np.testing.assert_array_equal(enc.embed(u8), np.load(tmp_path / "u8_cli.npy"))
    np.save(tmp_path / "u8_one.npy", u8[1])
    run_cli("embed", "--model", MODEL, "--input", tmp_path / "u8_one.npy", "--out", tmp_path / "u8_one_cli.npy")
    np.testing.assert_array_equal(enc.embed(u8[1]), np.load(tmp_path / "u8_one_cli.npy"))  # (S, S, 3)
    # float (N, 3, H, W) normalized pixels: used as they are; raw (unnormalized) output too.
    f = ((u8.astype(np.float32) - 128.0) / 128.0).transpose(0, 3, 1, 2).copy()
    np.save(tmp_path / "f.npy", f)
    run_cli("embed", "--model", MODEL, "--input", tmp_path / "f.npy", "--raw", "--out", tmp_path / "f_cli.npy")
    raw = enc.embed(f, normalize=False)
    np.testing.assert_array_equal(raw, np.load(tmp_path / "f_cli.npy"))
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    # Another layout (Fortran order) or dtype (float64) is converted once: the same bits.
    np.testing.assert_array_equal(enc.embed(np.asfortranarray(f), normalize=False), raw)
    np.testing.assert_array_equal(enc.embed(f.astype(np.float64), normalize=False), raw)


def test_encoder_errors_match_cli(tmp_path, enc):
    missing = str(tmp_path / "nope.jpg")
    msg = cli_error("embed", "--model", MODEL, missing, "--out", tmp_path / "o.npy")
    with pytest.raises(FileNotFoundError) as e:
        enc.embed([missing])
    assert str(e.value) == msg
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(OSError, match="could not be read"):
        enc.embed([str(tmp_path / "broken.jpg")])
    with pytest.raises(ValueError, match=r"uint8 input must be \(N,224,224,3\) RGB, got \(2, 100, 100, 3\)"):
        enc.embed(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="float input must be"):
        enc.embed(np.zeros((2, 224, 224, 3), np.float32))
    msg = cli_error("embed", "--model", tmp_path / "none.tflite", missing, "--out", tmp_path / "o.npy")
    with pytest.raises(FileNotFoundError) as e:
        vismem.load_encoder(tmp_path / "none.tflite")
    assert str(e.value) == msg


def test_end_to_end_images_equal_cli(tmp_path, enc):
    """A memory bound to the default encoder: built from an ImageFolder in Python and by
    `vismem add DIR`, the same items and bits; classify equals `vismem classify IMAGES --json`."""
    folder = tmp_path / "train"
    for path, c in images("train", 6):
        (folder / c).mkdir(parents=True, exist_ok=True)
        os.symlink(path, folder / c / os.path.basename(path))
    run_cli("create", tmp_path / "cli.db", "--model", MODEL)
    run_cli("add", tmp_path / "cli.db", folder)
    mem = vismem.Memory.create(tmp_path / "py.db", model=MODEL)
    assert mem.info["fingerprint"] == enc.fingerprint and mem.info["model_id"] == "mobilenet_v1"
    e = mem.encoder()
    found = vismem.scan_image_folder(folder)
    assert len(found) == 18 and found[0][2] == CLASSES[0] and found[0][1].startswith(CLASSES[0] + "/")
    paths, ids, labels = zip(*found)
    mem.add(list(ids), list(labels), e.embed(list(paths)))
    cli_mem = vismem.Memory.open(tmp_path / "cli.db")
    assert mem.items()["ids"] == cli_mem.items()["ids"]
    for i in ids[::5]:
        np.testing.assert_array_equal(mem.embedding(i), cli_mem.embedding(i))
    queries = [p for p, _ in images("val", 2)]
    want = cli_json("classify", tmp_path / "cli.db", *queries, "--k", 5, "--vote", "rank", "--json")
    got = mem.classify(e.embed(queries), k=5, vote="rank", query_ids=queries)
    assert got == want
    assert sum(g["prediction"] == c for g, (_, c) in zip(got, images("val", 2))) >= 5  # the photos are easy
    # The memory refuses an encoder with another fingerprint.
    other = SHARED / "models" / "mobilenet_v2_1.0_224_quant.tflite"
    with pytest.raises(ValueError, match="different model"):
        mem.encoder(other)


def test_int8_precision_matches_cli_and_is_recorded(tmp_path, enc):
    paths = [p for p, _ in images("val", 1)]
    q = vismem.load_encoder(MODEL, precision="int8")
    assert (q.precision, enc.precision) == ("int8", "f32")
    assert q.fingerprint == enc.fingerprint + "|int8|a8"  # a8: the int8 revision with 8-bit activations
    run_cli("embed", "--model", MODEL, "--precision", "int8", *paths, "--out", tmp_path / "q.npy")
    x = q.embed(paths)
    np.testing.assert_array_equal(x, np.load(tmp_path / "q.npy"))
    cos = (x * enc.embed(paths)).sum(axis=1)
    assert cos.min() > 0.99 and cos.max() < 1.0
    with pytest.raises(ValueError, match="int4"):
        vismem.load_encoder(MODEL, precision="int4")
    # The memory records it: its encoder() is the int8 one, and a CLI add of
    # images (no precision given) passes the fingerprint check.
    m = vismem.Memory.create(tmp_path / "m.db", model=MODEL, precision="int8")
    assert m.info["model_precision"] == "int8"
    assert m.encoder().precision == "int8"
    with pytest.raises(ValueError, match="needs model"):
        vismem.Memory.create(tmp_path / "n.db", dim=8, precision="int8")
