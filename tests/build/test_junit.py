"""JUnit files of smoke runs: sorted suites, counts, the merge's shard rules, the markdown table."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ane_build.build.junit import (
    Case,
    junit_suite,
    markdown_summary,
    merge_junit,
    read_suites,
    tally,
    to_bytes,
)
from ane_build.cli import main
from ane_build.errors import InputError

CASES = [
    Case("smoke.model", "b", "failed", 0.5, "FAIL y: max abs 1", "table", {"max_abs": "1"}),
    Case("smoke.model", "a", "passed", 0.25, properties={"latency_ms": "0.5"}),
    Case("smoke.sample", "c.ane", "skipped", message="no reference graph"),
]


def shard_file(tmp_path: Path, name: str, cases: list[Case], shard: str | None) -> Path:
    props = {"simulated": "false", **({"shard": shard} if shard else {})}
    path = tmp_path / name
    path.write_bytes(to_bytes(junit_suite(cases, props)))
    return path


def test_a_suite_is_sorted_and_counted_from_its_cases() -> None:
    suite = ET.fromstring(to_bytes(junit_suite(CASES, {"shard": "1/1"})))
    assert [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")] == [
        ("smoke.model", "a"),
        ("smoke.model", "b"),
        ("smoke.sample", "c.ane"),
    ]
    assert dict(suite.attrib) == {
        "name": "ane_build.smoke",
        "tests": "3",
        "failures": "1",
        "errors": "0",
        "skipped": "1",
        "time": "0.750",
    }
    failure = suite.find("testcase[@name='b']/failure")
    assert failure is not None and failure.get("message") == "FAIL y: max abs 1"
    assert failure.text == "table"
    assert tally(suite) == "1 passed, 1 failed, 1 skipped"


def test_two_cases_of_one_name_are_refused() -> None:
    with pytest.raises(InputError, match=r"case smoke\.model/a appears twice"):
        junit_suite([CASES[1], CASES[1]], {})


def test_shards_merge_and_keep_their_order_and_counts(tmp_path: Path) -> None:
    files = [
        shard_file(tmp_path, "2.xml", [CASES[0]], "2/2"),
        shard_file(tmp_path, "1.xml", [CASES[2], CASES[1]], "1/2"),
    ]
    merged = merge_junit(files)
    whole = junit_suite(CASES, {})
    assert to_bytes(merged).count(b"<testcase") == 3
    assert [c.get("name") for c in merged.iter("testcase")] == ["a", "b", "c.ane"]
    for key in ("tests", "failures", "errors", "skipped", "time"):
        assert merged.get(key) == whole.get(key), key
    props = {p.get("name"): p.get("value") for p in merged.findall("properties/property")}
    assert props == {"shard": "1-2/2", "simulated": "false"}


def test_files_without_shard_labels_merge_without_the_shard_rules(tmp_path: Path) -> None:
    files = [
        shard_file(tmp_path, "x.xml", [CASES[0]], None),
        shard_file(tmp_path, "y.xml", [CASES[1]], None),
    ]
    assert tally(merge_junit(files)) == "1 passed, 1 failed"


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["1/3", "3/3"], r"shard\(s\) 2/3 missing"),
        (["1/2", "1/2"], "shard 1/2 is given twice"),
        (["1/2", "2/3"], "different shard counts: 1/2"),
        (["1/2", "two/2"], "shard property 'two/2' is not K/N"),
        (["1/2", "3/2"], "shard property '3/2' is not K/N with 1 <= K <= N"),
    ],
)
def test_an_incomplete_or_inconsistent_shard_set_is_refused(
    tmp_path: Path, labels: list[str], message: str
) -> None:
    files = [shard_file(tmp_path, f"{i}.xml", [CASES[i]], label) for i, label in enumerate(labels)]
    with pytest.raises(InputError, match=message):
        merge_junit(files)


def test_overlapping_shards_are_refused_naming_both_files(tmp_path: Path) -> None:
    files = [
        shard_file(tmp_path, "1.xml", [CASES[0]], "1/2"),
        shard_file(tmp_path, "2.xml", [CASES[0]], "2/2"),
    ]
    with pytest.raises(InputError, match=r"smoke.model/b appears twice \(.*1.xml and .*2.xml\)"):
        merge_junit(files)


def test_unreadable_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no JUnit files"):
        merge_junit([])
    with pytest.raises(InputError, match=r"missing.xml: does not exist"):
        read_suites(tmp_path / "missing.xml")
    (tmp_path / "bad.xml").write_text("<testsuite")
    with pytest.raises(InputError, match=r"bad.xml: not a JUnit XML file"):
        read_suites(tmp_path / "bad.xml")
    (tmp_path / "other.xml").write_text("<report/>")
    with pytest.raises(InputError, match=r"no <testsuite> in it \(root element <report>\)"):
        read_suites(tmp_path / "other.xml")


def test_a_testsuites_wrapper_is_read(tmp_path: Path) -> None:
    inner = to_bytes(junit_suite(CASES[:2], {})).split(b"?>", 1)[1]
    (tmp_path / "w.xml").write_bytes(b"<testsuites>" + inner + b"</testsuites>")
    assert tally(merge_junit([tmp_path / "w.xml"])) == "1 passed, 1 failed"


def test_the_markdown_table_has_a_row_per_case_with_its_figures() -> None:
    latency = {"latency_min_ms": "0.1", "latency_median_ms": "0.2", "latency_p99_ms": "0.9"}
    cases = [*CASES[:2], Case("smoke.model", "c", "passed", properties={**latency, "repeat": "5"})]
    text = markdown_summary(junit_suite(cases, {"simulated": "false"}))
    lines = text.splitlines()
    assert lines[0] == "### ane_build smoke (hardware): 2 passed, 1 failed"
    rows = [line for line in lines if line.startswith("| ") and "smoke." in line]
    assert len(rows) == 3
    assert "**FAIL** | smoke.model/b" in rows[1] and "FAIL y: max abs 1" in rows[1]
    assert "0.100 / 0.200 / 0.900 (5 runs)" in rows[2]


def test_the_command_merges_and_fails_on_a_missing_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = shard_file(tmp_path, "1.xml", [CASES[1]], "1/2")
    two = shard_file(tmp_path, "2.xml", [CASES[0]], "2/2")
    out = tmp_path / "out" / "merged.xml"
    assert main(["junit-merge", str(out), str(one), str(two), "--markdown"]) == 0
    captured = capsys.readouterr()
    assert "1 passed, 1 failed from 2 file(s)" in captured.err
    assert captured.out.startswith("### ane_build smoke (hardware)")
    assert tally(ET.parse(out).getroot()) == "1 passed, 1 failed"
    assert main(["junit-merge", str(tmp_path / "again.xml"), str(one)]) == 3  # bad input
    assert "shard(s) 2/2 missing" in capsys.readouterr().err
    assert not (tmp_path / "again.xml").exists()
