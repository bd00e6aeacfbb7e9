"""JUnit XML of smoke runs: write one suite, read suites back, merge shard files, summarise.

Cases are always written sorted by (classname, name), so the merge of N shard files and the file
of a one-runner run list the same cases in the same order with the same counts. Pure XML and
text: this module must not run models, print or write files.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .._fs import os_problem
from ..errors import InputError

SUITE_NAME = "ane_build.smoke"
SHARD_PROPERTY = "shard"
SIMULATED_PROPERTY = "simulated"
_OUTCOMES = ("failure", "error", "skipped")

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Case:
    """One test case of a smoke run.

    Attributes:
        classname: The suite within the run (``smoke.model``, ``smoke.sample``, ``smoke.run``).
        name: The model's name or the sample's file name.
        status: The verdict.
        seconds: Wall time of the case.
        message: The one-line failure message or skip reason.
        detail: Longer text: the failure body, or the passing case's output.
        properties: Metrics and facts of the case (JUnit ``<property>`` elements).
    """

    classname: str
    name: str
    status: Status
    seconds: float = 0.0
    message: str = ""
    detail: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)


def _properties(parent: ET.Element, values: Mapping[str, str]) -> None:
    if values:
        props = ET.SubElement(parent, "properties")
        for name, value in values.items():
            ET.SubElement(props, "property", name=name, value=value)


def _case_element(case: Case) -> ET.Element:
    el = ET.Element("testcase", classname=case.classname, name=case.name)
    el.set("time", f"{case.seconds:.3f}")
    _properties(el, case.properties)
    if case.status == "failed":
        ET.SubElement(el, "failure", message=case.message).text = case.detail or case.message
    elif case.status == "skipped":
        ET.SubElement(el, "skipped", message=case.message)
    elif case.detail:
        ET.SubElement(el, "system-out").text = case.detail
    return el


def _key(el: ET.Element) -> tuple[str, str]:
    return (el.get("classname", ""), el.get("name", ""))


def _suite(cases: Iterable[ET.Element], properties: Mapping[str, str]) -> ET.Element:
    """A ``<testsuite>`` of ``cases`` in (classname, name) order, its counts taken from them."""
    ordered = sorted(cases, key=_key)
    counts = {kind: sum(1 for c in ordered if c.find(kind) is not None) for kind in _OUTCOMES}
    suite = ET.Element(
        "testsuite",
        name=SUITE_NAME,
        tests=str(len(ordered)),
        failures=str(counts["failure"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=f"{sum(float(c.get('time') or 0) for c in ordered):.3f}",
    )
    _properties(suite, properties)
    suite.extend(ordered)
    return suite


def to_bytes(suite: ET.Element) -> bytes:
    """The suite as an XML document (UTF-8, with declaration, newline-terminated)."""
    data: bytes = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def junit_suite(cases: Sequence[Case], properties: Mapping[str, str]) -> ET.Element:
    """The ``<testsuite>`` of one smoke run.

    Raises:
        InputError: Two cases share a classname and name.
    """
    elements = [_case_element(case) for case in cases]
    _refuse_duplicates((_key(el), "this run") for el in elements)
    return _suite(elements, properties)


def _refuse_duplicates(keys: Iterable[tuple[tuple[str, str], str]]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for key, origin in keys:
        if key in seen:
            raise InputError(
                f"case {key[0]}/{key[1]} appears twice ({seen[key]} and {origin}): shards "
                "must not overlap"
            )
        seen[key] = origin


def read_suites(path: Path) -> list[ET.Element]:
    """Every ``<testsuite>`` of a JUnit file (its root, or the children of ``<testsuites>``).

    Raises:
        InputError: The file cannot be read, is not XML, or holds no test suite.
    """
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise InputError(f"{path}: {os_problem(path, exc)}") from exc
    except ET.ParseError as exc:
        raise InputError(f"{path}: not a JUnit XML file: {exc}") from exc
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if not suites:
        raise InputError(f"{path}: no <testsuite> in it (root element <{root.tag}>)")
    return suites


def suite_properties(suite: ET.Element) -> dict[str, str]:
    """The suite-level ``<property>`` values by name."""
    return {p.get("name", ""): p.get("value", "") for p in suite.findall("properties/property")}


def _parse_label(label: str, path: Path) -> tuple[int, int]:
    index, _, count = label.partition("/")
    try:
        k, n = int(index), int(count)
    except ValueError:
        raise InputError(f"{path}: shard property {label!r} is not K/N") from None
    if not 1 <= k <= n:
        raise InputError(f"{path}: shard property {label!r} is not K/N with 1 <= K <= N")
    return k, n


def _check_shards(labels: Sequence[tuple[Path, str]]) -> str:
    """The shard set's label (``"1-3/3"``) when ``labels`` are shards 1..N of one N, each once.

    Raises:
        InputError: Shards of different N, a shard given twice, or one missing.
    """
    parsed = [(path, _parse_label(label, path)) for path, label in labels]
    counts = {n for _, (_, n) in parsed}
    if len(counts) > 1:
        listing = ", ".join(f"{label} ({path})" for path, label in labels)
        raise InputError(f"the files come from runs with different shard counts: {listing}")
    by_index: dict[int, Path] = {}
    for path, (k, n) in parsed:
        if k in by_index:
            raise InputError(f"shard {k}/{n} is given twice: {by_index[k]} and {path}")
        by_index[k] = path
    (n,) = counts
    missing = [f"{k}/{n}" for k in range(1, n + 1) if k not in by_index]
    if missing:
        raise InputError(
            f"shard(s) {', '.join(missing)} missing: no file among the {len(parsed)} given "
            "comes from it (did that shard's job fail before writing its report?)"
        )
    return f"1-{n}/{n}" if n > 1 else "1/1"


def _merged_simulated(values: Iterable[str]) -> str:
    found = set(values)
    return found.pop() if len(found) == 1 else "mixed"


def merge_junit(paths: Sequence[Path]) -> ET.Element:
    """One suite holding every case of ``paths`` (shard files of one run), sorted and counted.

    When every file names its shard (``K/N``), the files must be shards 1..N of one N, each once.

    Raises:
        InputError: No file, an unreadable file, a case in two files, or an incomplete or
            inconsistent set of shards.
    """
    if not paths:
        raise InputError("no JUnit files to merge")
    cases: list[tuple[ET.Element, Path]] = []
    labels: list[tuple[Path, str]] = []
    unlabelled = False
    simulated: list[str] = []
    for path in paths:
        for suite in read_suites(path):
            props = suite_properties(suite)
            if SHARD_PROPERTY in props:
                labels.append((path, props[SHARD_PROPERTY]))
            else:
                unlabelled = True
            if SIMULATED_PROPERTY in props:
                simulated.append(props[SIMULATED_PROPERTY])
            cases.extend((case, path) for case in suite.iter("testcase"))
    properties = {}
    if labels and not unlabelled:
        properties[SHARD_PROPERTY] = _check_shards(labels)
    _refuse_duplicates((_key(case), str(path)) for case, path in cases)
    if simulated:
        properties[SIMULATED_PROPERTY] = _merged_simulated(simulated)
    return _suite((case for case, _ in cases), properties)


def outcome(case: ET.Element) -> Status:
    """A ``<testcase>`` element's verdict (an ``<error>`` counts as failed)."""
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    return "skipped" if case.find("skipped") is not None else "passed"


def tally(suite: ET.Element) -> str:
    """``"3 passed, 1 failed, 4 skipped"`` for a suite's cases."""
    return count_line(outcome(case) for case in suite.iter("testcase"))


def count_line(statuses: Iterable[Status]) -> str:
    """``"3 passed, 1 failed, 4 skipped"`` (skipped only when there are some)."""
    found = list(statuses)
    parts = [f"{found.count('passed')} passed", f"{found.count('failed')} failed"]
    if "skipped" in found:
        parts.append(f"{found.count('skipped')} skipped")
    return ", ".join(parts)


_MARK = {"passed": "pass", "failed": "**FAIL**", "skipped": "skip"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _ms(props: Mapping[str, str], key: str) -> str:
    value = props.get(key)
    if value is None:
        return "-"
    number = float(value)
    return f"{number:.3f}" if math.isfinite(number) else value


def markdown_summary(suite: ET.Element) -> str:
    """A markdown table of a suite: verdict, case, what was checked, errors and latency."""
    props = suite_properties(suite)
    where = "simulator" if props.get(SIMULATED_PROPERTY) == "true" else "hardware"
    lines = [
        f"### ane_build smoke ({where}): {tally(suite)}",
        "",
        "| | case | checked | max abs | cosine | latency ms | min / median / p99 ms | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in suite.iter("testcase"):
        values = {
            p.get("name", ""): p.get("value", "") for p in case.findall("properties/property")
        }
        status = outcome(case)
        spread = "-"
        if "latency_median_ms" in values:
            spread = (
                " / ".join(_ms(values, f"latency_{k}_ms") for k in ("min", "median", "p99"))
                + f" ({values.get('repeat', '?')} runs)"
            )
        reason = case.find("failure") if status == "failed" else case.find("skipped")
        note = reason.get("message", "") if reason is not None else values.get("note", "")
        row = [
            _MARK[status],
            f"{case.get('classname', '')}/{case.get('name', '')}",
            values.get("checked", "-"),
            values.get("max_abs", "-"),
            values.get("cosine", "-"),
            _ms(values, "latency_ms"),
            spread,
            note,
        ]
        lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"
