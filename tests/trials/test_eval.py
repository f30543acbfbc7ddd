"""The quality harness (`fhir-server eval`): TREC measures, BM25 baseline, the CLI."""

from __future__ import annotations

import math
import shutil
from datetime import date
from pathlib import Path

import pytest

from fhir_server.cli import main
from fhir_server.trials.bm25 import BM25
from fhir_server.trials.eligibility import CriterionResult, TrialResult
from fhir_server.trials.evaluation import (EvalError, evaluate_set, ndcg, precision, read_qrels,
                                           refuted_without_evidence, trec_order)

DATA = Path(__file__).parent / "eval_data"


def test_ndcg_and_precision_match_hand_computed_values() -> None:
    judged = {"a": 2, "b": 1, "c": 0, "d": 2}
    ranking = ["b", "a", "x", "d"]  # x is unjudged: gain 0
    # by hand: DCG = 1 + 1.2619 + 0 + 0.8614 = 3.1232; ideal (2, 2, 1) = 2 + 1.2619 + 0.5 = 3.7619
    dcg = 1 / math.log2(2) + 2 / math.log2(3) + 0 + 2 / math.log2(5)
    ideal = 2 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg(ranking, judged) == pytest.approx(dcg / ideal)
    assert ndcg(ranking, judged) == pytest.approx(3.1232 / 3.7619, abs=1e-4)  # 0.8302
    assert precision(ranking, judged) == pytest.approx(0.2)  # a and d of 10; b (excluded) does not count
    assert ndcg(["c"], {"c": 0}) == 0.0


def test_runs_are_ordered_as_trec_eval_reads_them() -> None:
    # trec_eval sorts by score, then ties by document id descending; written scores have 4 decimals
    assert trec_order([("a", 1.0), ("c", 0.0), ("b", 1.00001), ("d", 2.0)]) == [
        ("d", 2.0), ("b", 1.0), ("a", 1.0), ("c", 0.0)]


def test_bm25_ranks_the_lexical_match_first() -> None:
    index = BM25({"lung": "Osimertinib in EGFR mutated non-small cell lung cancer",
                  "breast": "HER2 positive breast cancer after surgery",
                  "prostate": "Castration resistant prostate cancer"})
    ranked = index.rank("lung adenocarcinoma with EGFR mutation")
    assert ranked[0][0] == "lung" and ranked[0][1] > 0
    assert all(score == 0 for _, score in ranked[1:])


def test_cli_prints_the_metrics_writes_trec_runs_and_exits_0(tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(DATA), "--runs", str(tmp_path), "--today", "2026-12-06"]) == 0
    out = capsys.readouterr().out
    for measure in ("ndcg_cut_10", "P_10", "recall_eligible", "criterion_accuracy", "unknown_rate",
                    "eligible_ineligible_missing_data", "# run bm25"):
        assert measure in out
    lines = (tmp_path / "engine.run").read_text().splitlines()
    assert len(lines) == 5 * 15 and (tmp_path / "bm25.run").is_file()
    topic, q0, doc, rank, score, tag = lines[0].split()
    assert (topic, q0, rank, tag) == ("p1", "Q0", "1", "engine") and float(score) > float(lines[1].split()[4])


def test_missing_data_never_makes_an_eligible_trial_ineligible(tmp_path: Path) -> None:
    report = evaluate_set(DATA, date(2026, 12, 6), tmp_path)
    text = "\n".join(report.lines())
    assert "eligible_ineligible_missing_data    all\t0" in text
    assert report.eligible == 13 and report.marked_ineligible == 0
    # p2 has no ECOG recorded: the ECOG trial it is judged eligible for stays undetermined
    assert report.shown_eligible < report.not_ruled_out == report.eligible
    assert report.labelled == 18 and report.unknown > 0


def test_an_ineligible_verdict_without_evidence_is_counted_as_missing_data(tmp_path: Path) -> None:
    shutil.copytree(DATA, tmp_path / "set")
    # p5 is judged eligible for the paediatric registry: the engine refutes it from her birth date
    qrels = tmp_path / "set" / "qrels.txt"
    qrels.write_text(qrels.read_text().replace("p5 0 t14 1", "p5 0 t14 2"))
    report = evaluate_set(tmp_path / "set", date(2026, 12, 6), tmp_path / "runs")
    assert report.marked_ineligible == 1 and report.missing_data == 0  # refuted with evidence


def test_a_refutation_without_evidence_counts_as_missing_data() -> None:
    absent = CriterionResult("2", "ecog", "ECOG 0-1", False, "not-met")
    shown = CriterionResult("1", "age", "Adults", False, "not-met", evidence=("Patient/p",))
    assert refuted_without_evidence(TrialResult("t", "ineligible", 0.0, (shown, absent)))
    assert not refuted_without_evidence(TrialResult("t", "ineligible", 0.0, (shown,)))


def test_a_malformed_qrels_line_is_a_clear_error_with_exit_2(tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(DATA, tmp_path / "set")
    with (tmp_path / "set" / "qrels.txt").open("a") as qrels:
        qrels.write("p1 0 t04 eligible\n")
    assert main(["eval", str(tmp_path / "set"), "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "qrels.txt line 30" in err and "'p1 0 t04 eligible'" in err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(EvalError, match="line 1"):
        read_qrels(_write(tmp_path / "q.txt", "p1 t01 2\n"))


def test_a_judgment_on_an_unknown_trial_is_refused(tmp_path: Path) -> None:
    shutil.copytree(DATA, tmp_path / "set")
    with (tmp_path / "set" / "qrels.txt").open("a") as qrels:
        qrels.write("p1 0 t99 2\n")
    with pytest.raises(EvalError, match="p1 / t99"):
        evaluate_set(tmp_path / "set", date(2026, 12, 6), tmp_path / "runs")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
