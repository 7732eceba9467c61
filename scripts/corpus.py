"""Shared text-stage helpers of the ``prepare_*.sh`` recipes: line I/O, pair cleaning, Moses
tokenisation (sacremoses), joint BPE (subword-nmt), archive download/verification and resumable
steps.  No perl: everything here is pure Python.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import tarfile
import urllib.request
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

os.environ.setdefault("TQDM_DISABLE", "1")  # subword-nmt's learn_bpe draws a bar per merge

from sacremoses import MosesPunctNormalizer, MosesTokenizer  # noqa: E402
from subword_nmt.apply_bpe import BPE  # noqa: E402
from subword_nmt.learn_bpe import learn_bpe  # noqa: E402


class DataError(Exception):
    """Raw data missing, corrupt or inconsistent; the message says what and where."""


def read_lines(path: Path) -> list[str]:
    """Lines split on ``\\n`` only (as ``wc -l`` counts them), without line terminators."""
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\r\n") for line in f]


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write one line per item, ``\\n``-terminated."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(line + "\n" for line in lines)


_BREAKS_AND_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def one_line(text: str) -> str:
    """``text`` with control characters and Unicode line breaks turned into spaces, whitespace
    collapsed: a stray ``\\r`` or U+2028 would otherwise split a sentence in fairseq-preprocess
    (which reads with universal newlines) and shift every later pair."""
    return " ".join(_BREAKS_AND_CONTROLS.sub(" ", text).split())


def aligned_pairs(src: Sequence[str], tgt: Sequence[str], src_name: str, tgt_name: str
                  ) -> tuple[list[str], list[str], int]:
    """Kept source and target lines (cleaned with :func:`one_line`) and the number of pairs
    dropped because either side is empty; DataError when the sides differ in length."""
    if len(src) != len(tgt):
        raise DataError(f"line count mismatch: {src_name} has {len(src)} lines but {tgt_name} has "
                        f"{len(tgt)}; the sides must be line-aligned")
    kept = [(s, t) for s, t in ((one_line(s), one_line(t)) for s, t in zip(src, tgt)) if s and t]
    return [s for s, _ in kept], [t for _, t in kept], len(src) - len(kept)


def clean_pairs(src: Sequence[str], tgt: Sequence[str], max_len: int, ratio: float
                ) -> tuple[list[str], list[str]]:
    """Moses ``clean-corpus-n`` on tokenised text: keep pairs whose sides have 1..max_len tokens
    and whose token-count ratio (either way) is at most ``ratio``."""
    kept_src, kept_tgt = [], []
    for s, t in zip(src, tgt):
        n, m = len(s.split()), len(t.split())
        if 1 <= n <= max_len and 1 <= m <= max_len and n <= ratio * m and m <= ratio * n:
            kept_src.append(s)
            kept_tgt.append(t)
    return kept_src, kept_tgt


_TOKENIZE: Optional[Callable[[str], str]] = None


def _init_tokenizer(lang: str, lowercase: bool, aggressive: bool, normalize: bool) -> None:
    global _TOKENIZE
    tokenizer = MosesTokenizer(lang=lang)
    normalizer = MosesPunctNormalizer(lang=lang) if normalize else None

    def tokenize_line(line: str) -> str:
        if normalizer is not None:
            line = normalizer.normalize(line)
        out = tokenizer.tokenize(line, escape=False, aggressive_dash_splits=aggressive,
                                 return_str=True)
        return out.lower() if lowercase else out

    _TOKENIZE = tokenize_line


def _tokenize_line(line: str) -> str:
    assert _TOKENIZE is not None
    return _TOKENIZE(line)


def tokenize(lines: Sequence[str], lang: str, lowercase: bool = False, aggressive: bool = True,
             normalize: bool = False, workers: int = 1) -> list[str]:
    """Moses-tokenise with sacremoses: ``escape=False`` (``&``, quotes and apostrophes stay
    literal, so ``MosesDetokenizer`` undoes it), ``aggressive`` dash splits (``a-b`` ->
    ``a @-@ b``), optional punctuation normalisation first and lowercasing last; ``workers``
    processes."""
    settings = (lang, lowercase, aggressive, normalize)
    if workers <= 1:
        _init_tokenizer(*settings)
        return [_tokenize_line(line) for line in lines]
    with Pool(workers, initializer=_init_tokenizer, initargs=settings) as pool:
        return list(pool.imap(_tokenize_line, lines, chunksize=2000))


def learn_joint_bpe(texts: Sequence[Sequence[str]], codes: Path, merges: int) -> int:
    """Learn ``merges`` subword-nmt merges on the concatenated ``texts``; return how many it
    found (fewer when the corpus runs out of pairs)."""
    with open(codes, "w", encoding="utf-8") as f:
        learn_bpe([line for text in texts for line in text], f, merges)
    with open(codes, encoding="utf-8") as f:
        return sum(1 for _ in f) - 1  # the first line is the "#version" header


def apply_bpe(codes: Path, lines: Sequence[str]) -> list[str]:
    """Segment tokenised lines with the BPE ``codes`` (``@@`` continuation marker)."""
    with open(codes, encoding="utf-8") as f:
        bpe = BPE(f)
    return [bpe.process_line(line) for line in lines]


SPLITS = ("train", "valid", "test")


def tokenize_files(work: Path, splits: Sequence[str], langs: Sequence[str], lowercase: bool,
                   aggressive: bool = True, normalize: bool = False, workers: int = 1,
                   moses_lang: Optional[str] = None) -> None:
    """``WORK/{split}.raw.{lang}`` -> ``WORK/{split}.tok.{lang}`` with :func:`tokenize` (Moses
    rules of ``moses_lang``, default the file's language), printing line and token counts."""
    for split in splits:
        for lang in langs:
            lines = tokenize(read_lines(work / f"{split}.raw.{lang}"), moses_lang or lang,
                             lowercase, aggressive, normalize, workers)
            write_lines(work / f"{split}.tok.{lang}", lines)
            print(f"{split}.{lang}: {len(lines)} lines, {sum(len(x.split()) for x in lines)} "
                  "tokens", flush=True)


def joint_bpe_files(work: Path, kind: str, langs: Sequence[str], merges: int) -> None:
    """Learn a joint BPE on ``WORK/train.{kind}.{lang}`` of every language -> ``WORK/code`` and
    apply it to every split -> ``WORK/{split}.bpe.{lang}``, printing the counts."""
    text = {(split, lang): read_lines(work / f"{split}.{kind}.{lang}")
            for split in SPLITS for lang in langs}
    n_merges = learn_joint_bpe([text["train", lang] for lang in langs], work / "code", merges)
    print(f"joint BPE: {n_merges} merges (asked for {merges}) -> {work / 'code'}", flush=True)
    for (split, lang), lines in text.items():
        segmented = apply_bpe(work / "code", lines)
        write_lines(work / f"{split}.bpe.{lang}", segmented)
        print(f"{split}.{lang}: {len(segmented)} lines, "
              f"{len({w for line in segmented for w in line.split()})} BPE types", flush=True)


class Steps:
    """Resumable steps: a step whose marker file in ``WORK/.steps`` holds the same key is skipped.

    Keys chain: each step's key contains the previous one, so changing a setting re-runs the
    step that uses it and every later step, and nothing before it.
    """

    def __init__(self, work: Path) -> None:
        self.dir = work / ".steps"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ""

    def run(self, name: str, settings: str, action: Callable[[], None]) -> None:
        """Run ``action`` unless step ``name`` finished with the same settings chain."""
        self.key = f"{self.key} | {name}: {settings}".strip(" |")
        marker = self.dir / name
        if marker.is_file() and marker.read_text(encoding="utf-8") == self.key:
            print(f"skip: step '{name}' already done ({settings})", flush=True)
            return
        marker.unlink(missing_ok=True)
        print(f"== step '{name}' ({settings})", flush=True)
        action()
        marker.write_text(self.key, encoding="utf-8")


# --- archives ---------------------------------------------------------------------------------

class Archive:
    """A released archive: file name, download URL and, where published, size and digest."""

    def __init__(self, name: str, url: str, size: Optional[int] = None,
                 digest: Optional[str] = None, source: str = "") -> None:
        self.name, self.url, self.size, self.digest, self.source = name, url, size, digest, source


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, archive: Archive, enabled: bool) -> None:
    """Check an archive's size and digest against the published ones; DataError on mismatch."""
    if not enabled:
        print(f"warning: --no-verify: {path} is NOT checked against its published checksum",
              flush=True)
        return
    if archive.digest is None:
        print(f"note: no published checksum for {archive.name}; a truncated or corrupt archive "
              "still fails when it is read", flush=True)
        return
    size = path.stat().st_size
    advice = (f"it is truncated, corrupt or not the {archive.name} released at {archive.url}: "
              "delete it and download it again, or pass --no-verify to use it anyway")
    if archive.size is not None and size != archive.size:
        raise DataError(f"size mismatch for {path}: {size} bytes, expected {archive.size}; "
                        f"{advice}")
    algorithm, expected = archive.digest.split(":")
    got = file_digest(path, algorithm)
    if got != expected:
        raise DataError(f"checksum mismatch for {path}: {algorithm} {got}, expected {expected} "
                        f"({archive.source}); {advice}")
    print(f"verified {archive.name}: {algorithm} {expected}", flush=True)


def download(url: str, dest: Path, expected_size: Optional[int]) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` with an
    HTTP range request (restarting when the server ignores it); renamed only once complete."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        resumed = have > 0 and response.status == 206
        if have and not resumed:
            print(f"server ignored the resume request: restarting {dest.name}", flush=True)
        total = expected_size
        if total is None and response.headers.get("Content-Length"):
            total = int(response.headers["Content-Length"]) + (have if resumed else 0)
        print(f"downloading {url} -> {dest}" + (f" (resuming at {have} bytes)" if resumed else ""),
              flush=True)
        with open(part, "ab" if resumed else "wb") as f:
            for block in iter(lambda: response.read(1 << 20), b""):
                f.write(block)
    size = part.stat().st_size
    if total is not None and size != total:
        raise DataError(f"download of {url} stopped at {size} of {total} bytes; run again to "
                        f"resume ({part} is kept)")
    part.rename(dest)


def fetch_archives(archives: Sequence[Archive], raw_dir: Optional[Path], download_dir: Path,
                   check: bool) -> dict[str, Path]:
    """Paths of the verified archives: read from ``raw_dir`` (missing ones listed with their URLs
    in one DataError) or downloaded into ``download_dir``."""
    if raw_dir is not None:
        missing = [a for a in archives if not (raw_dir / a.name).is_file()]
        if missing:
            listing = "; ".join(f"{a.name} from {a.url}" for a in missing)
            raise DataError(f"missing archives in {raw_dir}: {listing}")
        paths = {a.name: raw_dir / a.name for a in archives}
    else:
        download_dir.mkdir(parents=True, exist_ok=True)
        paths = {a.name: download_dir / a.name for a in archives}
        for a in archives:
            if not paths[a.name].is_file():
                download(a.url, paths[a.name], a.size)
    for a in archives:
        verify(paths[a.name], a, check)
    return paths


def read_members(archive: Path, names: Sequence[str]) -> dict[str, list[str]]:
    """Lines (UTF-8, invalid bytes replaced) of the named members of a tar archive; leading
    ``./`` in member names is ignored.  DataError for a missing member or an unreadable archive."""
    wanted = set(names)
    found: dict[str, list[str]] = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    found[name] = data.decode("utf-8", errors="replace").split("\n")
                    if found[name] and found[name][-1] == "":
                        found[name].pop()  # the final newline does not start a line
    except (tarfile.TarError, EOFError, OSError) as error:
        raise DataError(f"cannot read {archive} ({error}): the archive is truncated or corrupt; "
                        "delete it and get it again") from error
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}: not the expected release?")
    return found


def fail(error: DataError) -> int:
    """Print a DataError for the shell recipe and return exit status 2."""
    print(f"error: {error}", file=sys.stderr)
    return 2
