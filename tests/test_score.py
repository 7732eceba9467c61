"""scripts/score.py and scripts/text_metrics.py: metrics on hand-computed examples, the MBR curve,
bad inputs, and the parser on real fairseq-generate output with several candidates per source."""
import json
import math
import re
import sys
from pathlib import Path

import pytest

from conftest import generate_args, run_fairseq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import score  # noqa: E402
import text_metrics as tm  # noqa: E402


def test_dist_1_div_4_and_self_bleu():
    assert tm.dist_n("a a b", 1) == pytest.approx(2 / 3)
    assert tm.dist_n("", 1) is None
    same = ["a b c d e"] * 3  # 2 distinct 4-grams of 6
    assert tm.div_n(same, 4) == pytest.approx(1 / 3)
    assert tm.self_bleu(same) == pytest.approx(1.0)
    assert tm.div_n(["a b c d", "e f g h"], 4) == 1.0
    assert tm.self_bleu(["a b c d", "e f g h"]) == 0.0
    assert tm.div_n(["a b", "c"], 4) is None and tm.self_bleu(["a b c d"]) is None


def test_sentence_bleu_is_nltk_with_smoothing_4():
    # p_n = 5/5, 3/4, 2/3, 1/2 (none zero, no smoothing); BP = exp(1 - 6/5)
    assert tm.sentence_bleu("the cat sat on mat", "the cat sat on the mat") == pytest.approx(
        math.exp(-0.2) * (3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    )
    # p_3 = 0/2 and p_4 = 0/1 get ln(4) / (2^k · 5) / denominator, k = 1, 2 (Chen & Cherry, method 4)
    smoothed = (3 / 4 * 1 / 3 * (math.log(4) / 10 / 2) * (math.log(4) / 20)) ** 0.25
    assert tm.sentence_bleu("a b c d", "a b x d") == pytest.approx(smoothed)
    assert tm.sentence_bleu("", "a b") == 0.0


def test_rouge_l():
    # LCS 5: precision 5/5, recall 5/6, F = 10/11
    assert tm.rouge_l(["the cat sat on mat", ""], ["the cat sat on the mat", "a"]) == pytest.approx([10 / 11, 0.0])


# source 0: MBR over the first n as listed picks "a b c d" (n = 1, 2: tie, the first), then
# "a b c d e" (n = 4: mean BLEU 0.584 against 0.519); source 1 has one candidate
CANDIDATES = [["a b c d", "x y z w", "a b c d e", "a b c d e"], ["p q r s"]]
REFERENCES = ["a b c d e", "p q r s"]
SHORT = math.exp(1 - 5 / 4)  # "a b c d" against "a b c d e": all precisions 1, brevity penalty


def test_mbr_curve_in_given_and_random_order():
    curve = tm.mbr_curve(CANDIDATES, REFERENCES, [1, 2, 4], seed=None)
    assert [p["sentence_bleu"] for p in curve] == pytest.approx([(SHORT + 1) / 2, (SHORT + 1) / 2, 1.0])
    assert [p["short"] for p in curve] == [0, 1, 1]
    assert curve[2]["bleu"] == pytest.approx(100.0)
    assert tm.mbr_curve([CANDIDATES[0]], REFERENCES[:1], [1], seed=None)[0]["bleu"] == pytest.approx(100 * SHORT)
    # all candidates: independent of the order
    assert tm.mbr_curve(CANDIDATES, REFERENCES, [4], seed=3) == curve[2:]


def write_generate(path: Path, candidates, references=None) -> Path:
    lines = []
    for i, cands in enumerate(candidates):
        lines.append(f"S-{i}\tsource {i}")
        if references:
            lines.append(f"T-{i}\t{references[i]}")
        for j, text in enumerate(cands):
            lines += [f"H-{i}\t{-j}\t{text}", f"D-{i}\t{-j}\t{text}", f"P-{i}\t-0.5 -0.5"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_score_cli_table_and_json(tmp_path, capsys):
    gen = write_generate(tmp_path / "gen.txt", CANDIDATES, REFERENCES)
    report = score.main([str(gen), "--mbr-curve", "1,2,4", "--mbr-order", "given", "--json"])
    assert json.loads(capsys.readouterr().out) == report
    metrics = report["metrics"]
    assert metrics["sentence_bleu"] == pytest.approx((SHORT + 1) / 2)
    assert metrics["rouge_l"] == pytest.approx((2 * 4 / 5 / (1 + 4 / 5) + 1) / 2)
    assert metrics["dist_1"] == 1.0 and metrics["length"] == 4.0 and metrics["ref_length"] == 4.5
    assert metrics["div_4"] == pytest.approx(3 / 6)  # abcd, xyzw, bcde of 6 four-grams; source 1 left out
    assert report["diversity_sources"] == 1 and report["candidates_per_source"] == {"min": 1, "max": 4}
    assert metrics["tok_bleu"] == pytest.approx(metrics["bleu"])
    assert [p["sentence_bleu"] for p in report["mbr_curve"]] == pytest.approx([(SHORT + 1) / 2] * 2 + [1.0])
    assert "nrefs:1" in report["sacrebleu_signature"]
    assert any("1 sources with one candidate" in note for note in report["notes"])
    assert any("MBR n=4: 1 sources have fewer candidates" in note for note in report["notes"])
    score.main([str(gen), "--mbr-curve", "1,4"])
    table = capsys.readouterr().out
    assert re.search(r"^sentence BLEU\s+0\.8894$", table, flags=re.M)
    assert re.search(r"^self-BLEU\s+\d\.\d{4}$", table, flags=re.M)
    assert re.search(r"^BERTScore F1\s+-$", table, flags=re.M)
    assert "BERTScore skipped: pass --bertscore-model DIR" in table


def test_plain_files_raw_references_and_detokenisation(tmp_path, capsys):
    hyps = tmp_path / "hyps.txt"
    hyps.write_text("I don 't know .\nI do n't know\na cat , sat\na cat sat\n", encoding="utf-8")
    refs = tmp_path / "refs.txt"
    refs.write_text("I don't know.\na cat, sat\n\n", encoding="utf-8")
    report = score.main(["--hyps", str(hyps), "--candidates", "2", "--ref", str(refs), "--detok", "en"])
    assert report["metrics"]["bleu"] == pytest.approx(100.0)  # detokenised outputs against raw refs
    assert report["metrics"]["tok_bleu"] < 100.0  # outputs as printed against the refs as given
    assert report["sources"] == 2 and report["diversity_sources"] == 2
    capsys.readouterr()


def test_without_references_only_reference_free_metrics(tmp_path, capsys):
    gen = write_generate(tmp_path / "gen.txt", [["a a b", "a b c d"], ["", "x"]])
    report = score.main([str(gen), "--mbr-curve", "1,2"])
    assert set(report["metrics"]) == {"dist_1", "self_bleu", "div_4", "length"}
    assert report["metrics"]["dist_1"] == pytest.approx(2 / 3)  # the empty output is left out
    assert report["metrics"]["length"] == 1.5 and report["empty_outputs"] == 1
    assert "mbr_curve" not in report
    out = capsys.readouterr().out
    assert "no references (no T- lines, no --ref)" in out and "1 empty outputs" in out


@pytest.mark.parametrize(
    "content,extra,message",
    [
        ("D-1\t-0.5\tx\n", [], "missing ids [0]"),
        ("S-0\tx\n", [], "no D- lines"),
        ("T-0\ta\nD-0\t0\ta\nD-1\t0\tb\n", [], "T- lines for 1 of 2 sources"),
        ("D-0\t0\tx\nD-1\t0\ty\nD-2\t0\tz\n", ["--ref", "REF"], "3 hypotheses but 2 references in --ref"),
        ("T-0\ta\nD-0\t0\ta\n", ["--bertscore-model", "/nonexistent"], "not a local model directory (no config.json)"),
    ],
)
def test_bad_inputs_are_reported(tmp_path, content, extra, message):
    gen = tmp_path / "gen.txt"
    gen.write_text(content, encoding="utf-8")
    ref = tmp_path / "ref.txt"
    ref.write_text("a\nb\n", encoding="utf-8")
    extra = [str(ref) if arg == "REF" else arg for arg in extra]
    with pytest.raises(SystemExit) as error:
        score.main([str(gen), *extra])
    assert message in str(error.value.code)


def test_bad_arguments(tmp_path, capsys):
    hyps = tmp_path / "hyps.txt"
    hyps.write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="3 lines is not a positive multiple of --candidates 2"):
        score.main(["--hyps", str(hyps), "--candidates", "2"])
    for argv in ([], [str(hyps), "--hyps", str(hyps)], [str(hyps), "--mbr-curve", "0,3"]):
        with pytest.raises(SystemExit):
            score.main(argv)
    err = capsys.readouterr().err
    assert "not both" in err and "candidate counts must be >= 1, got 0,3" in err


def test_metrics_module_imports_no_fairseq():
    source = (Path(score.__file__).parent / "text_metrics.py").read_text(encoding="utf-8")
    assert "import fairseq" not in source and "from fairseq" not in source


def test_generate_nbest_candidates_are_parsed_best_first(data_bin, checkpoint, tmp_path):
    """--length-beam 2 --noise-beam 3: 6 candidates per source; --nbest N prints up to N of them,
    best first (by score, or by MBR with --candidate-selection bleu-mbr)."""
    beams = ["--length-beam", "2", "--noise-beam", "3"]
    top4 = tmp_path / "top4.txt"
    top4.write_text(run_fairseq("generate", generate_args(data_bin, checkpoint, *beams, "--nbest", "4")))
    parsed = tm.read_generate(str(top4), prefix="H")
    assert len(parsed.candidates) == 30 and {len(c) for c in parsed.candidates} == {4}
    assert len(parsed.references) == 30
    scores = [float(s) for s in re.findall(r"^H-0\t(\S+)\t", top4.read_text(), flags=re.M)]
    assert scores == sorted(scores, reverse=True)

    mbr = tmp_path / "mbr.txt"
    # the text's MBR has no length probabilities: the decoder's rule with --length-score-weight 0
    args = generate_args(data_bin, checkpoint, *beams, "--nbest", "8", "--candidate-selection", "bleu-mbr",
                         "--length-score-weight", "0")
    mbr.write_text(run_fairseq("generate", args))
    parsed = tm.read_generate(str(mbr))
    assert {len(c) for c in parsed.candidates} == {6}
    assert all(c[0] == tm.mbr_select(c) for c in parsed.candidates)
    report = score.evaluate(parsed, mbr_sizes=[1, 6], seed=None)
    assert report["diversity_sources"] == 30 and 0.0 <= report["metrics"]["div_4"] <= 1.0
    # all 6 candidates in the printed order (ties: the first): the curve's MBR choice is the decoder's
    assert report["mbr_curve"][1]["bleu"] == pytest.approx(report["metrics"]["bleu"])


def test_diversity_over_the_first_samples(tmp_path, capsys):
    """--diversity-samples N: self-BLEU and div-4 over N candidates per source (DiffuSeq: 3), taken
    as listed (--mbr-order given) or in the seeded random order; BLEU still scores the first."""
    candidates = [["a b c d", "a b c d", "e f g h", "i j k l"]]
    gen = write_generate(tmp_path / "gen.txt", candidates, ["a b c d"])
    given = score.main([str(gen), "--diversity-samples", "2", "--mbr-order", "given", "--json"])
    assert given["metrics"]["div_4"] == 0.5 and given["metrics"]["self_bleu"] == pytest.approx(1.0)
    every = score.main([str(gen), "--json"])
    assert every["metrics"]["div_4"] == 0.75 and every["metrics"]["self_bleu"] == pytest.approx(1 / 6)
    drawn = score.main([str(gen), "--diversity-samples", "3", "--seed", "5", "--json"])
    first3 = tm.shuffled(candidates, 5)[0][:3]
    assert drawn["metrics"]["div_4"] == pytest.approx(tm.div_n(first3, 4))
    assert drawn["metrics"]["self_bleu"] == pytest.approx(tm.self_bleu(first3))
    assert drawn["metrics"]["bleu"] == pytest.approx(100.0)
    assert "self-BLEU and div-4 over the first 3 candidates of each source in random (seeded) order" in drawn["notes"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        score.main([str(gen), "--diversity-samples", "1"])
    assert "--diversity-samples must be >= 2, got 1" in capsys.readouterr().err
