"""Translation data (multi30k, wmt16, fake_wmt16): checks, vocabularies, batching, resume,
padding, references. No network, no /work data: tiny corpora are generated into tmp_path in
the Multi30k (.gz) and WMT16 layouts; the real-data test needs $PRUNE_DATA_ROOT."""
import gzip
import os
import pickle
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st
from omegaconf import OmegaConf

import prune_cli.data as data
from prune_cli.data import DataError, fake_wmt16, multi30k, translation, wmt16
from prune_cli.data.translation import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Pairs

CONF = Path(__file__).resolve().parent.parent / "conf" / "data"
META_KEYS = {"vocab_size", "pad_id", "bos_id", "eos_id", "unk_id", "dataset", "direction",
             "synthetic", "detokenize", "bleu_tokenize", "max_decode_len"}

# ----------------------------------------------------------------------------- tiny corpora
DE = "der die das ein eine mann frau hund katze läuft spielt sitzt auf im park mit dem ball rot blau".split()
EN = "the a man woman dog cat runs plays sits on in park with ball red blue big small green".split()


def _sentences(words, n, rng, lo=3, hi=9):
    out = set()
    while len(out) < n:  # unique sentences: a reference identifies its pair
        k = rng.randint(lo, hi)
        s = " ".join(rng.choice(words) for _ in range(k))
        out.add(s[0].upper() + s[1:] + ".")
    return sorted(out)


def tiny_multi30k(root: Path, n_train=300, n_eval=20, long_train=0, seed=0):
    """Writes <root>/multi30k/*.gz; returns {(split, lang): lines}."""
    rng = random.Random(seed)
    d = root / "multi30k"
    d.mkdir(parents=True, exist_ok=True)
    lines = {}
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        de = _sentences(DE, n, rng)
        en = _sentences(EN, n, rng)
        if split == "train":
            for i in range(long_train):  # pairs far longer than max_len
                de[i] = " ".join(["Katze"] * 40) + "."
        lines[split, "de"], lines[split, "en"] = de, en
    for (split, lang), ls in lines.items():
        stem = multi30k.SPLITS[split]
        with gzip.open(d / f"{stem}.{lang}.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(ls) + "\n")
    return lines


def m30k_cfg(root, cache, **kw):
    node = {"name": "multi30k", "root": str(root), "cache_dir": str(cache), "download": False,
            "direction": "de-en", "vocab_size": 100, "model_type": "bpe", "max_len": 50,
            "batch_size": 8, "eval_batch_size": 6, "pool": 3, "max_decode_len": 100}
    node.update(kw)
    return OmegaConf.create(node)


@pytest.fixture
def no_network(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("network touched")
    monkeypatch.setattr(multi30k, "_fetch", boom)
    monkeypatch.setattr(multi30k.urllib.request, "urlopen", boom)


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch, tmp_path):
    # per-process memo caches would hide what a fresh process does
    multi30k._MEMO.clear()
    wmt16._MEMO.clear()
    monkeypatch.setenv("PRUNE_CACHE_DIR", str(tmp_path / "envcache"))
    yield
    multi30k._MEMO.clear()
    wmt16._MEMO.clear()


@pytest.fixture
def m30k(tmp_path):
    lines = tiny_multi30k(tmp_path / "root", long_train=5)
    cfg = m30k_cfg(tmp_path / "root", tmp_path / "cache", max_len=35)  # normal pairs <= 29 pieces, long 41
    return lines, cfg


def batches(bundle, epoch, start=0):
    return list(bundle.train_epoch(epoch, start))


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v


# ----------------------------------------------------------------------------- registry, conf
def test_registered_and_conf_files():
    assert {"multi30k", "wmt16", "fake_wmt16"} <= set(data.names())
    for name in ("multi30k", "wmt16", "fake_wmt16"):
        node = OmegaConf.load(CONF / f"{name}.yaml")
        assert node.name == name and node.task == "translation" and node.batch_size == 128
        assert node.direction in ("de-en", "en-de")
    assert OmegaConf.load(CONF / "wmt16.yaml").max_len == 50
    assert OmegaConf.load(CONF / "fake_wmt16.yaml").vocab_size == 36548


# ----------------------------------------------------------------------------- checks
def test_check_missing_multi30k_one_line(tmp_path, no_network):
    with pytest.raises(DataError) as e:
        data.check(m30k_cfg(tmp_path, tmp_path / "c"))
    msg = str(e.value)
    assert "\n" not in msg
    for f in ("train.de.gz", "val.en.gz", "test_2016_flickr.de.gz"):
        assert f in msg
    assert str(tmp_path / "multi30k") in msg and "data.download=false" in msg


def test_check_download_failure_one_line(tmp_path, monkeypatch):
    def offline(url, dest):
        raise OSError("Network is unreachable")
    monkeypatch.setattr(multi30k, "_fetch", offline)
    with pytest.raises(DataError) as e:
        data.check(m30k_cfg(tmp_path, tmp_path / "c", download=True))
    msg = str(e.value)
    assert "\n" not in msg and "download failed" in msg and "train.en.gz" in msg
    assert [p.name for p in (tmp_path / "multi30k").iterdir()] == []  # no partial files


def test_download_checks_sha256(tmp_path, monkeypatch):
    payload = gzip.compress(b"Ein Hund.\n")
    monkeypatch.setattr(multi30k, "_fetch", lambda url, dest: Path(dest).write_bytes(payload))
    d = tmp_path / "multi30k"
    with pytest.raises(DataError, match="sha256"):
        multi30k.download(d, ["val.de.gz"])
    assert list(d.iterdir()) == []
    import hashlib
    monkeypatch.setitem(multi30k.SHA256, "val.de.gz", hashlib.sha256(payload).hexdigest())
    multi30k.download(d, ["val.de.gz"])
    assert (d / "val.de.gz").read_bytes() == payload


@pytest.mark.parametrize("name", ["multi30k", "wmt16", "fake_wmt16"])
def test_check_unknown_direction(tmp_path, name, no_network):
    tiny_multi30k(tmp_path)
    cfg = OmegaConf.create({"name": name, "root": str(tmp_path), "download": False,
                            "direction": "fr-en"})
    with pytest.raises(DataError) as e:
        data.check(cfg)
    assert "\n" not in str(e.value) and "data.direction='fr-en'" in str(e.value)
    assert "de-en or en-de" in str(e.value)


@pytest.mark.parametrize("key,value,words", [
    ("model_type", "word", "bpe or unigram"), ("vocab_size", 0, "positive integer"),
    ("vocab_size", 4, "special"), ("too_long", "cut", "drop"), ("batch_size", -1, "positive"),
    ("character_coverage", 1.5, "(0, 1]")])
def test_check_bad_keys(tmp_path, key, value, words):
    tiny_multi30k(tmp_path)
    with pytest.raises(DataError) as e:
        data.check(m30k_cfg(tmp_path, tmp_path / "c", **{key: value}))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_check_missing_wmt16_names_files_and_script(tmp_path):
    root = tmp_path / "r"
    tiny_wmt16(root)
    (root / "wmt16" / "newstest2015.tok.bpe.32000.en").unlink()
    (root / "wmt16" / "vocab.bpe.32000").unlink()
    with pytest.raises(DataError) as e:
        data.check(OmegaConf.create({"name": "wmt16", "root": str(root), "direction": "de-en"}))
    msg = str(e.value)
    assert "\n" not in msg and "wmt16_en_de.sh" in msg and "TensorFlow NMT" in msg
    assert "newstest2015.tok.bpe.32000.en, vocab.bpe.32000;" in msg
    assert "train.tok.clean" not in msg


def test_too_few_pairs_for_a_batch(tmp_path):
    tiny_multi30k(tmp_path / "r", n_train=20)
    with pytest.raises(DataError, match="data.batch_size=64 exceeds the 20 training pairs"):
        data.build(m30k_cfg(tmp_path / "r", tmp_path / "c", batch_size=64), 0)


# ----------------------------------------------------------------------------- sentencepiece
def test_vocab_deterministic_and_cached(tmp_path, m30k, monkeypatch):
    lines, cfg = m30k
    b1 = data.build(cfg, 0)
    multi30k._MEMO.clear()
    cfg2 = m30k_cfg(cfg.root, tmp_path / "cache2", max_len=35)
    b2 = data.build(cfg2, 0)
    c1, c2 = b1.meta["detokenize"], b2.meta["detokenize"]
    assert c1.model == c2.model  # same serialized model, byte for byte
    assert Path(b1.meta["spm_model"]).read_bytes() == c1.model
    assert [c1.sp.id_to_piece(i) for i in range(len(c1))] == [c2.sp.id_to_piece(i) for i in range(len(c2))]
    for split in ("valid", "test"):
        assert_same(list(b1.eval_splits[split]()), list(b2.eval_splits[split]()))
    assert_same(batches(b1, 0), batches(b2, 0))
    # a third build reads the caches: no training, no encoding, no reading of the corpus
    multi30k._MEMO.clear()
    monkeypatch.setattr(multi30k, "train_sentencepiece", lambda *a: pytest.fail("retrained"))
    monkeypatch.setattr(multi30k, "_read_gz", lambda *a: pytest.fail("re-read"))
    b3 = data.build(cfg, 0)
    assert b3.meta["detokenize"].model == c1.model
    assert_same(batches(b1, 1), batches(b3, 1))


def test_cache_key_follows_settings_and_files(tmp_path, m30k):
    lines, cfg = m30k
    p1 = data.build(cfg, 0).meta["spm_model"]
    p2 = data.build(m30k_cfg(cfg.root, cfg.cache_dir, vocab_size=110, max_len=35), 0).meta["spm_model"]
    assert p1 != p2
    with gzip.open(Path(cfg.root) / "multi30k" / "train.en.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines["train", "en"][::-1]) + "\n")
    p3 = data.build(cfg, 0).meta["spm_model"]
    assert p3 not in (p1, p2)
    assert str(tmp_path / "cache" / "multi30k") == str(Path(p1).parent)


def test_special_ids_and_round_trip(m30k):
    lines, cfg = m30k
    codec = data.build(cfg, 0).meta["detokenize"]
    sp = codec.sp
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert len(codec) == 100
    for key in (("valid", "de"), ("test", "en"), ("train", "de")):
        for s in lines[key]:
            ids = codec.encode(s)
            assert min(ids) > UNK_ID  # no special, no unknown piece in normal text
            assert codec(ids) == s
    # pickles (to worker processes) and still decodes
    again = pickle.loads(pickle.dumps(codec))
    assert again(codec.encode(lines["test", "de"][0])) == lines["test", "de"][0]


def test_vocab_trained_on_train_split_only(tmp_path):
    lines = tiny_multi30k(tmp_path / "r")
    # a character that only val has cannot become a piece
    with gzip.open(tmp_path / "r" / "multi30k" / "val.en.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(["Ω " + s for s in lines["valid", "en"]]) + "\n")
    codec = data.build(m30k_cfg(tmp_path / "r", tmp_path / "c"), 0).meta["detokenize"]
    assert UNK_ID in codec.encode("Ω")


# ----------------------------------------------------------------------------- multi30k bundle
def test_meta_contract(m30k):
    lines, cfg = m30k
    b = data.build(cfg, 0)
    assert META_KEYS <= set(b.meta)
    m = b.meta
    assert (m["pad_id"], m["bos_id"], m["eos_id"], m["unk_id"]) == (0, 1, 2, 3)
    assert (m["dataset"], m["direction"], m["synthetic"], m["bleu_tokenize"]) == ("multi30k", "de-en", False, "13a")
    assert m["vocab_size"] == 100 and m["max_decode_len"] == 100
    assert callable(m["detokenize"])
    assert set(b.eval_splits) == {"valid", "test"}


def test_long_training_pairs_dropped_eval_kept(m30k):
    lines, cfg = m30k
    b = data.build(cfg, 0)
    assert b.meta["train_too_long"] == 5 and b.meta["train_empty"] == 0
    assert b.meta["train_pairs"] == 295
    assert b.steps_per_epoch == 295 // 8
    for batch in batches(b, 0):
        assert int(batch[1].max()) <= 35 and batch[3].size(1) <= 36
    assert b.meta["eval_pairs"] == {"valid": 20, "test": 20}
    t = data.build(m30k_cfg(cfg.root, cfg.cache_dir, max_len=35, too_long="truncate"), 0)
    assert t.meta["train_pairs"] == 300 and t.meta["train_too_long"] == 5
    assert max(int(x[1].max()) for x in batches(t, 0)) == 35


def _pair_ids(b, codec, lines, split, src_lang, tgt_lang):
    return {codec.decode(codec.encode(t)): (codec.encode(s), codec.encode(t))
            for s, t in zip(lines[split, src_lang], lines[split, tgt_lang])}


@pytest.mark.parametrize("direction", ["de-en", "en-de"])
def test_eval_batches_cover_every_pair_refs_aligned(m30k, direction):
    lines, cfg = m30k
    cfg.direction = direction
    src_lang, tgt_lang = direction.split("-")
    b = data.build(cfg, 0)
    codec = b.meta["detokenize"]
    for split in ("valid", "test"):
        by_ref = dict(zip(lines[split, tgt_lang], lines[split, src_lang]))
        seen, lens = [], []
        for src, src_len, tgt_in, tgt_out, refs in b.eval_splits[split]():
            assert src.size(0) == src_len.size(0) == tgt_in.size(0) == tgt_out.size(0) == len(refs) <= 6
            for i, ref in enumerate(refs):
                n = int(src_len[i])
                assert codec(src[i, :n].tolist()) == by_ref[ref]          # row i's source is ref's pair
                tlen = tgt_out[i].tolist().index(EOS_ID)
                assert codec(tgt_out[i, :tlen].tolist()) == ref            # and its target is ref
            seen += refs
            lens += src_len.tolist()
        assert Counter(seen) == Counter(lines[split, tgt_lang])           # every sentence once
        assert lens == sorted(lens, reverse=True)                          # longest first


def test_train_batches_are_the_corpus_pairs(m30k):
    lines, cfg = m30k
    b = data.build(cfg, 0)
    codec = b.meta["detokenize"]
    pairs = {(codec(codec.encode(s)), codec(codec.encode(t)))
             for s, t in zip(lines["train", "de"], lines["train", "en"])}
    got = []
    for src, src_len, tgt_in, tgt_out in batches(b, 3):
        assert src.size(0) == 8  # every batch full
        for i in range(8):
            tlen = tgt_out[i].tolist().index(EOS_ID)
            got.append((codec(src[i, :int(src_len[i])].tolist()), codec(tgt_out[i, :tlen].tolist())))
    assert len(got) == len(set(got)) == 36 * 8  # no pair twice in an epoch
    assert set(got) <= pairs


# ----------------------------------------------------------------------------- batching (shared)
def check_batch(batch, pairs=None, idx=None):
    src, src_len, tgt_in, tgt_out = batch[:4]
    for t in (src, src_len, tgt_in, tgt_out):
        assert t.dtype == torch.int64
    B = src.size(0)
    assert src_len.shape == (B,) and tgt_in.shape == tgt_out.shape and tgt_in.size(0) == B
    assert src.size(1) == int(src_len.max()) and bool((src_len >= 1).all())
    tgt_len = (tgt_out == EOS_ID).int().argmax(1)
    assert tgt_in.size(1) == int(tgt_len.max()) + 1
    assert bool((tgt_in[:, 0] == BOS_ID).all())
    for i in range(B):
        n, t = int(src_len[i]), int(tgt_len[i])
        assert bool((src[i, :n] > PAD_ID).all()) and bool((src[i, n:] == PAD_ID).all())
        assert torch.equal(tgt_in[i, 1:t + 1], tgt_out[i, :t])
        assert bool((tgt_out[i, :t] > EOS_ID).all()) and int(tgt_out[i, t]) == EOS_ID
        assert bool((tgt_out[i, t + 1:] == PAD_ID).all()) and bool((tgt_in[i, t + 1:] == PAD_ID).all())
        if pairs is not None:
            j = int(idx[i])
            assert src[i, :n].tolist() == pairs.src.row(j) and tgt_out[i, :t].tolist() == pairs.tgt.row(j)


def random_pairs(rng, n, max_len=12, vocab=50):
    def sent():
        return [rng.randint(4, vocab - 1) for _ in range(rng.randint(1, max_len))]
    return Pairs.from_lists([sent() for _ in range(n)], [sent() for _ in range(n)])


def test_padding_and_content_exact():
    rng = random.Random(1)
    pairs = random_pairs(rng, 40)
    idx = torch.tensor([3, 0, 39, 17, 5])
    check_batch(translation.make_batch(pairs, idx), pairs, idx)
    # hand-worked case
    p = Pairs.from_lists([[5, 6, 7], [8]], [[9], [10, 11, 12]])
    src, src_len, tgt_in, tgt_out = translation.make_batch(p, torch.tensor([1, 0]))
    assert src.tolist() == [[8, 0, 0], [5, 6, 7]] and src_len.tolist() == [1, 3]
    assert tgt_in.tolist() == [[1, 10, 11, 12], [1, 9, 0, 0]]
    assert tgt_out.tolist() == [[10, 11, 12, 2], [9, 2, 0, 0]]


def test_empty_eval_source_gets_eos():
    p = Pairs.from_lists([[], [5]], [[9], [10]], refs=["a", "b"])
    src, src_len, _, _ = translation.make_batch(p, torch.tensor([0, 1]))
    assert src.tolist() == [[EOS_ID], [5]] and src_len.tolist() == [1, 1]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 90), batch=st.integers(1, 12), pool=st.integers(1, 5),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 5), data_seed=st.integers(0, 1000))
def test_epoch_exact_resume_and_coverage(n, batch, pool, seed, epoch, data_seed):
    pairs = random_pairs(random.Random(data_seed), n)
    if n < batch:
        with pytest.raises(DataError):
            translation.TranslationBatches(pairs, {}, seed, batch_size=batch, pool=pool)
        return
    ds = translation.TranslationBatches(pairs, {}, seed, batch_size=batch, pool=pool)
    plan = ds.plan(epoch)
    assert len(plan) == ds.steps_per_epoch == n // batch
    assert plan.shape == (n // batch, batch)
    rows = plan.flatten().tolist()
    assert len(rows) == len(set(rows)) == (n // batch) * batch        # each pair at most once
    full = list(ds.train_epoch(epoch, 0))
    assert len(full) == ds.steps_per_epoch
    for start in {0, 1, len(full) // 2, len(full) - 1, len(full), len(full) + 3}:
        assert_same(list(ds.train_epoch(epoch, start)), full[start:])
    for idx, b in zip(plan[:3], full[:3]):
        check_batch(b, pairs, idx)
    assert_same(full, list(translation.TranslationBatches(
        pairs, {}, seed, batch_size=batch, pool=pool).train_epoch(epoch, 0)))


def test_epochs_and_seeds_differ_and_pool_sorts():
    pairs = random_pairs(random.Random(0), 400, max_len=40)
    ds = translation.TranslationBatches(pairs, {}, 7, batch_size=10, pool=8)
    p0, p1 = ds.plan(0), ds.plan(1)
    assert [x.tolist() for x in p0] != [x.tolist() for x in p1]
    other = translation.TranslationBatches(pairs, {}, 8, batch_size=10, pool=8).plan(0)
    assert [x.tolist() for x in p0] != [x.tolist() for x in other]
    # batches come from pools sorted by target length: target lengths within a batch are close
    spread = [int(pairs.tgt.lens[b].max() - pairs.tgt.lens[b].min()) for b in p0]
    unsorted = translation.TranslationBatches(pairs, {}, 7, batch_size=10, pool=1).plan(0)
    spread1 = [int(pairs.tgt.lens[b].max() - pairs.tgt.lens[b].min()) for b in unsorted]
    assert sum(spread) * 3 < sum(spread1)
    with pytest.raises(ValueError):
        next(ds.train_epoch(0, -1))


def test_multi30k_resume_exact(m30k):
    lines, cfg = m30k
    b = data.build(cfg, 5)
    full = batches(b, 2)
    assert len(full) == b.steps_per_epoch
    for start in (0, 1, 17, len(full) - 1, len(full)):
        assert_same(batches(b, 2, start), full[start:])
    for x in full:
        check_batch(x)


# ----------------------------------------------------------------------------- wmt16
WMT_TOKENS = ["the", "hou@@", "se", "is", "red", "das", "Hau@@", "s", "ist", "rot", ".", "ca@@", "t"]


def tiny_wmt16(root: Path, n_train=40, with_specials=True, seed=0):
    """Writes <root>/wmt16/ in the TF NMT layout; returns {(split, lang): lines}."""
    rng = random.Random(seed)
    d = root / "wmt16"
    d.mkdir(parents=True, exist_ok=True)
    head = list(wmt16.SPECIALS) if with_specials else []
    (d / wmt16.VOCAB).write_text("\n".join(head + WMT_TOKENS) + "\n", encoding="utf-8")
    lines = {}
    for split, n in (("train", n_train), ("valid", 7), ("test", 5)):
        for lang in ("de", "en"):
            ls = [" ".join(rng.choice(WMT_TOKENS) for _ in range(rng.randint(1, 7))) for _ in range(n)]
            lines[split, lang] = ls
    lines["train", "en"][0] = " ".join(["the"] * 12)     # longer than max_len 8
    lines["train", "de"][1] = ""                         # empty: left out
    lines["test", "en"][0] = "the Haus@@ unseen ."       # unknown tokens -> <unk>
    for (split, lang), ls in lines.items():
        (d / wmt16.FILES[split, lang]).write_text("\n".join(ls) + "\n", encoding="utf-8")
    return lines


def wmt_cfg(root, cache, **kw):
    node = {"name": "wmt16", "root": str(root), "cache_dir": str(cache), "direction": "en-de",
            "max_len": 8, "batch_size": 4, "eval_batch_size": 3, "pool": 2, "max_decode_len": 300}
    node.update(kw)
    return OmegaConf.create(node)


@pytest.mark.parametrize("with_specials", [True, False])
def test_wmt16_vocab_ids(tmp_path, with_specials):
    tiny_wmt16(tmp_path, with_specials=with_specials)
    itos = wmt16.read_vocab(tmp_path / "wmt16" / wmt16.VOCAB)
    assert itos == ["<pad>", "<s>", "</s>", "<unk>"] + WMT_TOKENS
    b = data.build(wmt_cfg(tmp_path, tmp_path / "c"), 0)
    assert b.meta["vocab_size"] == len(WMT_TOKENS) + 4  # the file's lines (with specials) + pad


def test_wmt16_batches_refs_and_detokenize(tmp_path):
    lines = tiny_wmt16(tmp_path)
    b = data.build(wmt_cfg(tmp_path, tmp_path / "c"), 3)
    m = b.meta
    assert META_KEYS <= set(m)
    assert (m["dataset"], m["direction"], m["bleu_tokenize"], m["synthetic"]) == ("wmt16", "en-de", "none", False)
    assert (m["too_long"], m["train_too_long"], m["train_empty"], m["train_pairs"]) == ("truncate", 1, 1, 39)
    itos = ["<pad>", "<s>", "</s>", "<unk>"] + WMT_TOKENS
    stoi = {t: i for i, t in enumerate(itos)}
    detok = pickle.loads(pickle.dumps(m["detokenize"]))
    assert detok([stoi["hou@@"], stoi["se"], stoi["is"], stoi["ca@@"], stoi["t"]]) == "house is cat"
    for split in ("valid", "test"):
        refs_all, by_ref = [], {}
        for s, t in zip(lines[split, "en"], lines[split, "de"]):
            by_ref.setdefault(t.replace("@@ ", ""), set()).add(tuple(stoi.get(w, UNK_ID) for w in s.split()))
        for batch in b.eval_splits[split]():
            check_batch(batch)
            src, src_len, _, tgt_out, refs = batch
            for i, ref in enumerate(refs):
                t = tgt_out[i].tolist().index(EOS_ID)
                assert detok(tgt_out[i, :t].tolist()) == ref
                assert tuple(src[i, :int(src_len[i])].tolist()) in by_ref[ref]
            refs_all += refs
        assert Counter(refs_all) == Counter(x.replace("@@ ", "") for x in lines[split, "de"])
    # the unknown source tokens of test line 0 ("the Haus@@ unseen .") became <unk>
    rows = [x[0][i, :int(x[1][i])].tolist() for x in b.eval_splits["test"]() for i in range(len(x[4]))]
    assert [stoi["the"], UNK_ID, UNK_ID, stoi["."]] in rows
    full = batches(b, 1)
    assert len(full) == b.steps_per_epoch == 39 // 4
    for x in full:
        check_batch(x)
        assert x[0].size(1) <= 8 and x[2].size(1) <= 9
    assert_same(batches(b, 1, 4), full[4:])
    # cached: a second build does not read the text files again
    wmt16._MEMO.clear()
    b2 = data.build(wmt_cfg(tmp_path, tmp_path / "c"), 3)
    assert_same(batches(b2, 1), full)


def test_wmt16_drop_mode(tmp_path):
    tiny_wmt16(tmp_path)
    b = data.build(wmt_cfg(tmp_path, tmp_path / "c", too_long="drop"), 0)
    assert (b.meta["train_pairs"], b.meta["train_too_long"]) == (38, 1)


# ----------------------------------------------------------------------------- fake_wmt16
def fake_cfg(**kw):
    node = dict(OmegaConf.to_container(OmegaConf.load(CONF / "fake_wmt16.yaml")))
    node.update(kw)
    return OmegaConf.create(node)


def test_fake_wmt16_vocab_and_meta():
    b = data.build(fake_cfg(train_size=300, batch_size=32), 0)
    m = b.meta
    assert META_KEYS <= set(m)
    assert m["vocab_size"] == 36548 == fake_wmt16.VOCAB_SIZE
    assert (m["synthetic"], m["dataset"], m["bleu_tokenize"]) == (True, "fake_wmt16", "none")
    assert b.steps_per_epoch == 300 // 32 and m["eval_pairs"] == {"valid": 64, "test": 64}


def test_fake_wmt16_learnable_mapping_and_refs():
    corpus = fake_wmt16.FakeCorpus(data_seed=3)
    pairs = corpus.split("valid", 50)
    mapping = corpus.mapping
    assert sorted(mapping.tolist()) == list(range(36548)) and mapping[:4].tolist() == [0, 1, 2, 3]
    lens = pairs.src.lens
    assert int(lens.min()) >= 1 and int(lens.max()) <= 50 and 12 <= float(lens.float().median()) <= 40
    for i in range(len(pairs)):
        s, t = pairs.src.row(i), pairs.tgt.row(i)
        assert min(s) >= 4 and t == [int(mapping[x]) for x in reversed(s)]
        assert pairs.refs[i] == " ".join(f"w{x}" for x in t) == fake_wmt16.FakeDetokenizer()(t)
    # the corpus is a function of data_seed only; the run seed orders batches
    a = data.build(fake_cfg(train_size=256, data_seed=1), 0)
    b = data.build(fake_cfg(train_size=256, data_seed=1), 1)
    assert_same(list(a.eval_splits["test"]()), list(b.eval_splits["test"]()))
    ra = sorted(x[0][i, :int(x[1][i])].tolist() for x in a.train_epoch(0) for i in range(x[0].size(0)))
    rb = sorted(x[0][i, :int(x[1][i])].tolist() for x in b.train_epoch(0) for i in range(x[0].size(0)))
    assert ra == rb
    assert not torch.equal(next(a.train_epoch(0))[0], next(b.train_epoch(0))[0])
    c = data.build(fake_cfg(train_size=256, data_seed=2), 0)
    assert next(c.eval_splits["test"]())[4] != next(a.eval_splits["test"]())[4]


# ----------------------------------------------------------------------------- real data
REAL = Path(os.environ.get("PRUNE_DATA_ROOT", "/nonexistent")) / "multi30k"


@pytest.mark.skipif(not all((REAL / f).is_file() for f in multi30k.FILES.values()),
                    reason="real Multi30k not in $PRUNE_DATA_ROOT/multi30k")
def test_real_multi30k_sizes(tmp_path):
    cfg = OmegaConf.load(CONF / "multi30k.yaml")
    cfg.root = str(REAL.parent)
    cfg.cache_dir = str(tmp_path)
    cfg.download = False
    b = data.build(cfg, 0)
    m = b.meta
    assert m["train_pairs"] + m["train_too_long"] + m["train_empty"] == 29000
    assert m["eval_pairs"] == {"valid": 1014, "test": 1000} and m["standard_files"] is True
    assert m["vocab_size"] == 4000 and b.steps_per_epoch == m["train_pairs"] // 128
    refs = [r for x in b.eval_splits["test"]() for r in x[4]]
    with gzip.open(REAL / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as f:
        assert Counter(refs) == Counter(f.read().split("\n")[:-1])
    codec = m["detokenize"]
    assert sum(codec(codec.encode(r)) == " ".join(r.split()) for r in refs) == 1000
