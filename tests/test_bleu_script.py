"""scripts/bleu.py: ordering by id, detokenisation, count mismatches."""
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = str(Path(__file__).resolve().parents[1] / "scripts" / "bleu.py")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def test_bleu_orders_by_id_and_detokenises(tmp_path):
    gen = tmp_path / "gen.txt"
    gen.write_text(
        "S-1\tx\nD-1\t-0.5\tI don 't know .\nD-0\t-0.1\ta cat , sat\nH-0\t-0.1\tignored\n",
        encoding="utf-8",
    )
    ref = tmp_path / "ref.txt"
    ref.write_text("a cat, sat\nI don't know.\n\n", encoding="utf-8")
    out = run(str(gen), "--ref", str(ref), "--detok", "en")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "BLEU = 100.00 (2 sentences)"
    raw = run(str(gen), "--ref", str(ref))
    assert float(raw.stdout.split("BLEU = ")[1].split()[0]) < 100.0


@pytest.mark.parametrize(
    "content,message",
    [("D-1\t-0.5\tx\n", "missing ids [0]"), ("S-0\tx\n", "no D- lines"), ("D-0\t0\tx\nD-1\t0\ty\nD-2\t0\tz\n", "3 hypotheses but 2 references")],
)
def test_bleu_reports_bad_inputs(tmp_path, content, message):
    gen = tmp_path / "gen.txt"
    gen.write_text(content, encoding="utf-8")
    ref = tmp_path / "ref.txt"
    ref.write_text("a\nb\n", encoding="utf-8")
    out = run(str(gen), "--ref", str(ref))
    assert out.returncode != 0 and message in out.stderr
