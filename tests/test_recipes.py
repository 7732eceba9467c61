"""Tests for scripts/prepare_wmt14.sh and scripts/prepare_iwslt14.sh on tiny archives in the real
releases' layouts, and for the download helper (resume, restart, truncation)."""
from __future__ import annotations

import http.server
import re
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import corpus  # noqa: E402

DE = ["Der Hund", "Die Katze", "Ein Kind", "Der Lehrer", "Die Stadt", "Das Parlament"]
EN = ["The dog", "The cat", "A child", "The teacher", "The city", "The parliament"]
VERBS = [("schläft", "sleeps"), ("lacht heute", "laughs today"), ("wartet", "waits"),
         ("arbeitet viel", "works a lot"), ("ist wach", "is awake")]
PAIRS = [(f"{d} {dv}.", f"{e} {ev}.") for d, e in zip(DE, EN) for dv, ev in VERBS]  # 30


def _tgz(path: Path, members: dict[str, list[str]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, lines in members.items():
            data = "".join(line + "\n" for line in lines).encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _sgm(lines: list[str], lang: str, kind: str) -> list[str]:
    head = f'<{kind}set setid="newstest2014" srclang="any" trglang="{lang}">'
    return [head, '<doc sysid="ref" docid="1" origlang="en">', "<p>",
            *(f'<seg id="{i}">{line}</seg>' for i, line in enumerate(lines, 1)),
            "</p>", "</doc>", f"</{kind}set>"]


def fake_wmt14(raw: Path) -> Path:
    """europarl: 20 pairs + an empty pair + one pair the length-ratio clean drops; commoncrawl:
    8 pairs (one with a stray carriage return) + a pair with an empty English side; nc-v9: 2
    pairs; newstest2013: 4 pairs; newstest2014: 3 segments."""
    raw.mkdir()
    europarl = PAIRS[:10] + [("", "")] + PAIRS[10:20] + [("Ja.", "Yes " + "indeed " * 6 + ".")]
    crawl = PAIRS[20:28] + [("Ein Satz.", "")]
    crawl[3] = ("Der Hund\rschläft.", crawl[3][1])
    for name, stem, pairs in (
            ("training-parallel-europarl-v7.tgz", "training/europarl-v7.de-en", europarl),
            ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en", crawl),
            ("training-parallel-nc-v9.tgz", "training/news-commentary-v9.de-en", PAIRS[28:30])):
        _tgz(raw / name, {f"{stem}.de": [d for d, _ in pairs], f"{stem}.en": [e for _, e in pairs]})
    _tgz(raw / "dev.tgz", {"dev/newstest2013.de": [d for d, _ in PAIRS[:4]],
                           "dev/newstest2013.en": [e for _, e in PAIRS[:4]]})
    _tgz(raw / "test-full.tgz", {
        "test-full/newstest2014-deen-src.en.sgm": _sgm([e for _, e in PAIRS[4:7]], "en", "src"),
        "test-full/newstest2014-deen-ref.de.sgm": _sgm([d for d, _ in PAIRS[4:7]], "de", "ref")})
    return raw


def _xml(lines: list[str], lang: str) -> list[str]:
    return ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>",
            f'<srcset setid="iwslt2014" srclang="{lang}">', '<doc docid="1" genre="lectures">',
            "<url>http://www.ted.com/talks/x.html</url>", "<talkid>1</talkid>",
            *(f'<seg id="{i}"> {line} </seg>' for i, line in enumerate(lines, 1)),
            "</doc>", "</srcset>", "</mteval>"]


def fake_iwslt14(raw: Path) -> Path:
    """train.tags: 2 talks' metadata + 48 pairs + an empty pair; five test XML sets of 2 pairs."""
    raw.mkdir()
    train = [(f"{DE[i % 6]} {VERBS[i % 5][0]} {i}.", f"{EN[i % 6]} {VERBS[i % 5][1]} {i}.")
             for i in range(48)]
    meta = {lang: ["<url>http://www.ted.com/talks/a.html</url>", "<keywords>talks</keywords>",
                   "<talkid>1</talkid>", f"<title>Titel {lang}</title>",
                   f"<description>Beschreibung {lang}</description>"] for lang in ("de", "en")}
    tags = {lang: meta[lang] + [p[k] for p in train[:24]] + [""] + meta[lang]
            + [p[k] for p in train[24:]] for k, lang in enumerate(("de", "en"))}
    members = {f"de-en/train.tags.de-en.{lang}": tags[lang] for lang in ("de", "en")}
    for j, name in enumerate(("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011",
                              "TED.tst2012", "TED.tst2013")):
        pairs = PAIRS[2 * j:2 * j + 2]
        pairs[0] = (pairs[0][0], pairs[0][1].replace("The", "It\u2019s & the"))
        for k, lang in enumerate(("de", "en")):
            members[f"de-en/IWSLT14.{name}.de-en.{lang}.xml"] = _xml([p[k] for p in pairs], lang)
    _tgz(raw / "de-en.tgz", members)
    return raw


def run(script: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHON=sys.executable)
    return subprocess.run(["bash", str(REPO / "scripts" / script), *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=180)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def binarised_sizes(out: Path, split: str, pair: str, lang: str) -> int:
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(out / f"dict.{lang}.txt"))
    dataset = data_utils.load_indexed_dataset(str(out / f"{split}.{pair}.{lang}"), dictionary)
    return len(dataset)


def test_wmt14_end_to_end_and_resume(tmp_path: Path) -> None:
    raw, out = fake_wmt14(tmp_path / "raw"), tmp_path / "wmt14_en_de"
    args = ["--raw-dir", raw, "--out", out, "--bpe-merges", "40", "--max-len", "20",
            "--workers", "1", "--no-verify"]
    result = run("prepare_wmt14.sh", *args)
    assert result.returncode == 0, result.stderr
    log = result.stdout
    assert log.count("warning: --no-verify") == 5
    assert "train training/europarl-v7.de-en: 21 pairs kept, 1 dropped (empty" in log
    assert "train commoncrawl.de-en: 8 pairs kept, 1 dropped" in log
    assert "train training/news-commentary-v9.de-en: 2 pairs kept, 0 dropped" in log
    assert "valid newstest2013: 4 pairs kept" in log and "test newstest2014: 3 pairs kept" in log
    assert "train: 30 of 31 pairs kept by clean-corpus (1..20 tokens, ratio <= 1.5), 1 dropped" in log
    assert "joint BPE: 40 merges (asked for 40)" in log
    work = Path(f"{out}_work")
    for split, n in (("train", 30), ("valid", 4), ("test", 3)):
        for lang in ("en", "de"):
            assert len(lines(work / f"{split}.bpe.{lang}")) == n
            assert binarised_sizes(out, split, "en-de", lang) == n
    assert lines(work / "test.raw.de") == [d for d, _ in PAIRS[4:7]]  # sacrebleu reference
    assert "Der Hund schläft ." in lines(work / "train.tok.de")  # \r became a space
    assert (out / "dict.en.txt").read_text() == (out / "dict.de.txt").read_text()

    again = run("prepare_wmt14.sh", *args)
    assert again.returncode == 0, again.stderr
    for step in ("extract", "tokenize", "clean", "bpe", "binarize"):
        assert f"skip: step '{step}' already done" in again.stdout
    merges = run("prepare_wmt14.sh", *args[:4], "--bpe-merges", "30", *args[6:])
    assert merges.returncode == 0, merges.stderr
    assert "skip: step 'clean'" in merges.stdout and "== step 'bpe' (merges=30)" in merges.stdout
    assert "joint BPE: 30 merges" in merges.stdout and "skip: step 'binarize'" not in merges.stdout


def test_wmt14_checksum_mismatch_names_the_file(tmp_path: Path) -> None:
    raw = fake_wmt14(tmp_path / "raw")
    result = run("prepare_wmt14.sh", "--raw-dir", raw, "--out", tmp_path / "bin")
    assert result.returncode == 2
    assert f"size mismatch for {raw}/training-parallel-europarl-v7.tgz" in result.stderr
    assert "expected 657632379" in result.stderr and "--no-verify" in result.stderr
    with pytest.raises(corpus.DataError, match=r"checksum mismatch .* md5 .*expected a8cd"):
        corpus.verify(raw / "test-full.tgz", corpus_archive("test-full.tgz"), True)


def corpus_archive(name: str) -> corpus.Archive:
    import prepare_text

    return next(a for a in prepare_text.WMT14_ARCHIVES if a.name == name)


def test_wmt14_missing_archives_are_listed_with_urls(tmp_path: Path) -> None:
    raw = fake_wmt14(tmp_path / "raw")
    for name in ("training-parallel-commoncrawl.tgz", "test-full.tgz"):
        (raw / name).unlink()
    result = run("prepare_wmt14.sh", "--raw-dir", raw, "--out", tmp_path / "bin")
    assert result.returncode == 2
    assert ("training-parallel-commoncrawl.tgz from http://www.statmt.org/wmt13/"
            "training-parallel-commoncrawl.tgz; test-full.tgz from "
            "https://statmt.org/wmt14/test-full.tgz") in result.stderr


def test_wmt14_mismatched_sides_and_truncated_archive(tmp_path: Path) -> None:
    raw = fake_wmt14(tmp_path / "raw")
    _tgz(raw / "training-parallel-nc-v9.tgz", {
        "training/news-commentary-v9.de-en.de": ["Ein Satz.", "Noch einer."],
        "training/news-commentary-v9.de-en.en": ["A sentence."]})
    result = run("prepare_wmt14.sh", "--raw-dir", raw, "--out", tmp_path / "bin", "--no-verify")
    assert result.returncode == 2
    assert ("line count mismatch: training/news-commentary-v9.de-en.en has 1 lines but "
            "training/news-commentary-v9.de-en.de has 2") in result.stderr
    data = (raw / "dev.tgz").read_bytes()
    (raw / "dev.tgz").write_bytes(data[: len(data) // 2])
    with pytest.raises(corpus.DataError, match="truncated or corrupt"):
        corpus.read_members(raw / "dev.tgz", ["dev/newstest2013.de"])


def test_iwslt14_end_to_end(tmp_path: Path) -> None:
    raw, out = fake_iwslt14(tmp_path / "raw"), tmp_path / "iwslt14_de_en"
    result = run("prepare_iwslt14.sh", "--raw-dir", raw, "--out", out, "--bpe-merges", "40",
                 "--workers", "1")
    assert result.returncode == 0, result.stderr
    log = result.stdout
    assert "note: no published checksum for de-en.tgz" in log
    # title and description lines stay (tags removed), as in fairseq: 2 talks x 2 + 48 pairs
    assert "train train.tags: 52 pairs kept, 1 dropped (empty on either side)" in log
    for name in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"):
        assert f"test {name}: 2 pairs kept" in log
    assert "TED.tst2013" not in log  # not part of fairseq's test set
    assert "train: 52 of 52 pairs kept by clean-corpus (1..175 tokens" in log
    assert "valid: cleaned train pairs number 23, 46, ... held out -> 2 pairs; train: 50" in log
    work = Path(f"{out}_work")
    train_tok = lines(work / "train.tok.en")
    assert lines(work / "valid.clean.en") == [train_tok[22], train_tok[45]]
    for split, n in (("train", 50), ("valid", 2), ("test", 10)):
        for lang in ("de", "en"):
            assert binarised_sizes(out, split, "de-en", lang) == n
    assert train_tok[:3] == ["titel en", "beschreibung en", "the dog sleeps 0 ."]  # lowercased
    assert lines(work / "test.raw.en")[0] == "It's & the dog sleeps."  # cased reference
    assert lines(work / "test.tok.en")[0] == "it 's & the dog sleeps ."


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    honour_range = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        start = 0
        if self.honour_range and self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_RangeHandler]]]:
    handler = type("Handler", (_RangeHandler,), {"payload": bytes(range(256)) * 400})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/de-en.tgz", handler
    httpd.shutdown()


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_or_restarts(tmp_path: Path, server, honour_range: bool,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    url, handler = server
    handler.honour_range = honour_range
    dest = tmp_path / "de-en.tgz"
    (tmp_path / "de-en.tgz.part").write_bytes(handler.payload[:1000])  # an interrupted download
    corpus.download(url, dest, len(handler.payload))
    assert dest.read_bytes() == handler.payload and not (tmp_path / "de-en.tgz.part").exists()
    log = capsys.readouterr().out
    assert ("resuming at 1000 bytes" in log) == honour_range
    assert ("restarting de-en.tgz" in log) != honour_range


def test_download_short_of_expected_size_is_kept_as_part(tmp_path: Path, server) -> None:
    url, handler = server
    with pytest.raises(corpus.DataError, match="stopped at 102400 of 102401 bytes"):
        corpus.download(url, tmp_path / "de-en.tgz", len(handler.payload) + 1)
    assert not (tmp_path / "de-en.tgz").exists() and (tmp_path / "de-en.tgz.part").exists()


def test_distill_trains_teacher_translates_and_binarises(data_bin: Path, tmp_path: Path) -> None:
    out = tmp_path / "distill"
    args = ["--data-bin", data_bin, "--src", "src", "--tgt", "tgt", "--out", out, "--arch",
            "transformer", "--max-update", "2", "--max-tokens", "2000", "--", "--encoder-layers",
            "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
            "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--num-workers", "0"]
    env_run = lambda *more: subprocess.run(  # noqa: E731
        ["bash", str(REPO / "scripts" / "distill.sh"), *map(str, more or args)], cwd=REPO,
        env=dict(os.environ, CPU="1", PYTHON=sys.executable, OMP_NUM_THREADS="1",
                 PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]),
        capture_output=True, text=True, timeout=300)
    result = env_run()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "teacher test: Generate test with beam=5: BLEU4" in result.stdout
    kept = int(re.search(r"distilled train: (\d+) pairs, (\d+) dropped", result.stdout).group(1))
    assert binarised_sizes(out, "train", "src-tgt", "tgt") == kept <= 300
    for name in ("dict.src.txt", "dict.tgt.txt", "valid.src-tgt.src.bin", "test.src-tgt.tgt.idx"):
        assert (out / name).read_bytes() == (data_bin / name).read_bytes()
    again = env_run()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skip: teacher already trained" in again.stdout
    assert "skip: train split already translated" in again.stdout
    # the same teacher translating in two processes, each on half of the batches: same pairs
    sharded = tmp_path / "sharded"
    two = env_run("--data-bin", data_bin, "--src", "src", "--tgt", "tgt", "--out", sharded,
                  "--teacher", tmp_path / "distill_work" / "teacher" / "checkpoint_last.pt",
                  "--max-tokens", "2000", "--shards", "2", "--max-length-ratio", "100")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es)" in two.stdout and "0 replaced by the original target" in two.stdout
    for lang in ("src", "tgt"):
        assert ((tmp_path / "sharded_work" / f"train.distill.{lang}").read_text()
                == (tmp_path / "distill_work" / f"train.distill.{lang}").read_text())


def test_distill_refuses_a_data_bin_without_the_pair(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(REPO / "scripts" / "distill.sh"), "--data-bin",
                             str(tmp_path), "--src", "de", "--tgt", "en"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "lacks train.de-en.de.bin" in result.stderr


def test_distill_refuses_a_bad_shard_count(data_bin: Path) -> None:
    result = subprocess.run(["bash", str(REPO / "scripts" / "distill.sh"), "--data-bin",
                             str(data_bin), "--src", "src", "--tgt", "tgt", "--shards", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "--shards must be a positive integer, got '0'" in result.stderr


def test_average_checkpoints(tmp_path: Path) -> None:
    import average_checkpoints
    import torch

    for update, value in ((10, 0.0), (20, 1.0), (30, 2.0)):
        torch.save({"model": {"w": torch.full((2,), value, dtype=torch.float16),
                              "n": torch.tensor(update)}, "extra_state": {"u": update}},
                   tmp_path / f"checkpoint_1_{update}.pt")
    output = tmp_path / "avg.pt"
    average_checkpoints.main(["--inputs", str(tmp_path), "--num-update-checkpoints", "2",
                              "--output", str(output)])
    state = torch.load(output, weights_only=True)
    assert state["model"]["w"].tolist() == [1.5, 1.5] and state["model"]["w"].dtype == torch.float16
    assert state["model"]["n"].item() == 30 and state["extra_state"] == {"u": 30}
    with pytest.raises(SystemExit, match="has 3 such checkpoints, 4 asked for"):
        average_checkpoints.main(["--inputs", str(tmp_path), "--num-update-checkpoints", "4",
                                  "--output", str(output)])
    (tmp_path / "checkpoint_1_40.pt").write_bytes(b"")
    with pytest.raises(Exception, match="is empty"):
        average_checkpoints.main(["--inputs", str(tmp_path), "--num-update-checkpoints", "2",
                                  "--output", str(output)])


@pytest.mark.parametrize("ngpu, expected", [("0", "--max-tokens 8192 --update-freq 8"),
                                            ("2", "--max-tokens 8192 --update-freq 4"),
                                            ("16", "--max-tokens 4096 --update-freq 1")])
def test_recipe_batch_reaches_the_papers_tokens(ngpu: str, expected: str) -> None:
    script = (f"DATASET=wmt14 SRC=en TGT=de DATA=d NGPU={ngpu}; source examples/recipe.sh; "
              "echo $ARCH $(batch_args $TOKENS) ${DEVICE[*]}")
    result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" --", 1)[0] == "difformer_wmt_en_de"
    assert expected in result.stdout and ("--cpu" in result.stdout) == (ngpu == "0")
    assert ("--fp16" in result.stdout) == (ngpu != "0")


def test_multi30k_ablation_arm_trains_decodes_and_tabulates(data_bin: Path, tmp_path: Path) -> None:
    """examples/multi30k/ablation.sh: arms joined with + train to MAX_UPDATE with all their flags
    (here importance sampling is on, --input-norm, the rounding loss replaces the anchor loss, the
    embedding norm is off, F = 2.5, and of the recipe's Difformer choices post-norm is undone;
    the recipe's adaptive schedule refits at W + U = 4), are decoded, scored and listed by
    ``table``; an unknown arm is refused; fixed-schedule turns the adaptive schedule off,
    no-embed-norm-affine takes the recipe's scale and shift off the embedding norm, dropX,
    lenlossX and tokN set the dropout, the length loss's weight and the tokens per batch, no-bos-eos
    diffuses the target's tokens alone (the recipe's arms diffuse BOS and EOS around them)."""
    arm = "importance+input-norm+pre-norm+rounding+no-embed-norm+f2.5"
    env = dict(os.environ, SRC="src", TGT="tgt", DATA=str(data_bin), OUT=str(tmp_path),
               MAX_UPDATE="4", ADAPTIVE_INTERVAL="2", STEPS="2 3:1",
               REF=str(data_bin.parent / "raw" / "test.tgt"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    script = str(REPO / "examples" / "multi30k" / "ablation.sh")
    tiny = ["--encoder-layers", "1", "--decoder-layers", "1", "--model-dim", "32", "--ffn-dim",
            "64", "--latent-dim", "16", "--max-tokens", "2000", "--num-workers", "0"]
    result = subprocess.run(["bash", script, arm, *tiny], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = (tmp_path / arm / "train.log").read_text()
    assert "adaptive schedule at update 4" in log and "'timestep_sampler': loss-second-moment" in log
    assert "'adaptive_schedule': True" in log
    assert "'post_norm': False, 'learned_positions': True, 'bert_init': True" in log
    assert "'input_norm': True" in log and "'rounding_loss': True" in log and "'embed_norm': False" in log
    assert "'embed_norm_affine': False" in log and "'embed_norm_affine': True" not in log
    assert "'rescaling_factor': '2.5'" in log and "'diffuse_bos_eos': True" in log  # the recipe's
    rows = re.findall(rf"^\| {re.escape(arm)} \| 4 \| \d+ \| (\d) \| (\d) \| [0-9.]+ \| [0-9.]+ \|$",
                      result.stdout, re.M)
    assert rows == [("2", "0"), ("3", "1")], result.stdout[-2000:]
    again = subprocess.run(["bash", script, arm, *tiny], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and (tmp_path / arm / "train.log").read_text() == log
    assert re.findall(rf"^\| {re.escape(arm)} \| 4 \|", again.stdout, re.M)  # decoded, not trained
    table = subprocess.run(["bash", script, "table"], env=env, capture_output=True, text=True)
    assert len(table.stdout.splitlines()) == 4 and "| 3 | 1 |" in table.stdout.splitlines()[3]
    bad = subprocess.run(["bash", script, "slow-lr+bogus"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown arm 'bogus'" in bad.stderr
    knobs = "fixed-schedule+no-embed-norm-affine+drop0.25+lenloss0.5+tok1500+no-bos-eos"
    own_batch = [a for a in tiny if a not in ("--max-tokens", "2000")]
    knobbed = subprocess.run(["bash", script, knobs, *own_batch],
                             env=dict(env, MAX_UPDATE="2", STEPS="1"), capture_output=True, text=True, timeout=300)
    assert knobbed.returncode == 0, knobbed.stdout[-2000:] + knobbed.stderr[-2000:]
    log = (tmp_path / knobs / "train.log").read_text()
    assert "'adaptive_schedule': False" in log and "'embed_norm_affine': False" in log
    assert "'dropout': 0.25," in log and "'length_loss_factor': 0.5," in log
    assert "'max_tokens': 1500," in log and "'diffuse_bos_eos': False" in log
    assert re.search(rf"^\| {re.escape(knobs)} \| 2 \| \d+ \| 1 \| 0 \| [0-9.]+ \| [0-9.]+ \|$", knobbed.stdout, re.M)
    # the DiffuSeq arm: encoder-only, targets padded to 48 positions within 100; F = auto searched
    # against the dgs arm's threshold
    env["STEPS"] = "2"
    diffuseq = subprocess.run(["bash", script, "diffuseq+dgs0.3", "--layers", "1", *tiny[4:]], env=env,
                              capture_output=True, text=True, timeout=300)
    assert diffuseq.returncode == 0, diffuseq.stdout[-2000:] + diffuseq.stderr[-2000:]
    log = (tmp_path / "diffuseq+dgs0.3" / "train.log").read_text()
    assert "'model': {'_name': 'diffuseq_tiny'" in log
    assert "'layers': 1, 'max_positions': 100, 'max_target_positions': 48}" in log
    assert re.search(r"--rescaling-factor auto: F = [0-9.]+ \(DGS [0-9.]+ <= 0\.3;", log)
    assert re.search(r"^\| diffuseq\+dgs0\.3 \| 4 \| \d+ \| 2 \| 0 \|", diffuseq.stdout, re.M)


def test_distill_text_replaces_runaway_translations() -> None:
    import distill_text

    sources, originals = ["a b", "c d e"], ["x y", "z"]
    targets = ["p q", "r " * 20]  # 20 tokens > 2 · 3 + 5
    out, replaced = distill_text.replace_runaways(sources, targets, originals, 2.0)
    assert out == ["p q", "z"] and replaced == 1
    assert distill_text.replace_runaways(sources, targets, originals, 5.0) == (targets, 0)
