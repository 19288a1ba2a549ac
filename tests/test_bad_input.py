"""Bad input, one table: every mistake a user can make in data files, configs, grid files and command
lines, run through the CLI as a user would. Each case must end with a non-zero exit status and exactly
one ``Error:`` line that says what is wrong, where and how to fix it (the table asserts a distinctive
fragment of it), no traceback, and nothing already computed lost: every case runs into a runs
directory that holds a finished run, whose result.json must stay as it was. Two inputs are not
mistakes and must work: a UTF-8 byte-order mark and CRLF line ends (``ok`` rows).

Deeper tests of some of these live beside their code (test_data.py, test_config.py, test_grid.py);
this table is the one list to read for what a user sees.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FAST, tiny_rows, write_jsonl
from testbed.cli import main

# FAST on tiny files: 2 labels and 1 validation example per class, 2 steps
DATA = [*(o for o in FAST if not o.startswith(("dataset.", "train.steps", "train.eval_every"))),
        "dataset.labels_per_class=2", "dataset.validation_per_class=1", "train.steps=2", "train.eval_every=2"]
TRAIN = tiny_rows(6, classes=("neg", "pos"), prefix="train ")
TEST = tiny_rows(2, classes=("neg", "pos"), prefix="test ")


def csv_text(rows: list[dict], sep: str = ",", newline: str = "\n") -> str:
    return newline.join([sep.join(rows[0]), *(sep.join(str(v) for v in row.values()) for row in rows)]) + newline


def jsonl_text(rows: list[dict], newline: str = "\n") -> str:
    return "".join(json.dumps(row) + newline for row in rows)


LATIN1 = "text,label\ntrain caf\xe9 one,neg\ntrain na\xefve two,pos\n".encode("latin-1")  # what Excel on Windows saves


@dataclass
class Case:
    """``files``: name -> content (str, bytes or rows) written into the case's directory ``{d}``;
    ``args``: the command line (``{d}`` the case's directory, ``{out}`` the runs directory holding the
    finished run); ``message``: a fragment of the one error line; ``ok``: the input must work."""

    id: str
    args: list[str]
    message: str = ""
    files: dict = field(default_factory=dict)
    ok: bool = False


def run(*extra: str) -> list[str]:
    return ["run", *DATA, *extra, "--out", "{out}", "--quiet"]


def grid(*extra: str) -> list[str]:
    return ["grid", *extra, *DATA, "dataset.name=trec", "--out", "{out}", "--quiet"]


GOOD = {"train.jsonl": TRAIN, "test.jsonl": TEST}

CASES = [
    # ------------------------------------------------------------------ data files
    Case("data: missing directory", run("dataset.name={d}/nowhere/"), "{d}/nowhere/' not found"),
    Case("data: missing file", run("dataset.name=files", "dataset.path={d}/train.csv", "dataset.test={d}/test.csv"),
         "{d}/train.csv' not found"),
    Case("data: no test file", run("dataset.name={d}"), "needs train and test files", {"train.jsonl": TRAIN}),
    Case("data: one file, no test", run("dataset.name={d}/all.csv"), "dataset.test_fraction (e.g. 0.2)",
         {"all.csv": csv_text(TRAIN)}),
    Case("data: empty jsonl", run("dataset.name={d}"), "train.jsonl is empty", {"train.jsonl": "", "test.jsonl": TEST}),
    Case("data: empty csv", run("dataset.name={d}"), "train.csv is empty: it needs a header line",
         {"train.csv": "", "test.jsonl": TEST}),
    Case("data: csv with a header only", run("dataset.name={d}"), "train.csv is empty: a dataset split needs at least one row",
         {"train.csv": "text,label\n", "test.jsonl": TEST}),
    Case("data: wrong columns, csv", run("dataset.name={d}"), "train.csv, row 1: needs columns 'text' and 'label'",
         {"train.csv": csv_text([{"sentence": r["text"], "label": r["label"]} for r in TRAIN]), "test.jsonl": TEST}),
    Case("data: no label column", run("dataset.name={d}"), "train.jsonl, row 1: no label column 'label'",
         {"train.jsonl": [{"text": r["text"], "y": r["label"]} for r in TRAIN], "test.jsonl": TEST}),
    Case("data: tsv row with an extra field", run("dataset.name={d}"), "Each line needs as many tab-separated fields",
         {"train.tsv": csv_text(TRAIN, "\t") + "one\ttoo\tmany\n", "test.tsv": csv_text(TEST, "\t")}),
    Case("data: unlabeled file without a text column", run("dataset.name={d}"), "unlabeled.jsonl, row 1: needs a column 'text'",
         {**GOOD, "unlabeled.jsonl": [{"sentence": "u"}]}),
    Case("data: not UTF-8, csv", run("dataset.name={d}"), "train.csv:2: not UTF-8 (byte 0xe9", {"train.csv": LATIN1, "test.jsonl": TEST}),
    Case("data: not UTF-8, jsonl", run("dataset.name={d}"), "test.jsonl:2: not UTF-8 (byte 0xe9 at column 14)",
         {"train.jsonl": TRAIN, "test.jsonl": b'{"text": "a", "label": "neg"}\n{"text": "caf\xe9", "label": "pos"}\n'}),
    Case("data: not UTF-8, tsv", run("dataset.name={d}"), "iconv -f latin1 -t utf-8",
         {"train.tsv": LATIN1.replace(b",", b"\t"), "test.tsv": csv_text(TEST, "\t")}),
    Case("data: not UTF-8, labels.json", run("dataset.name={d}"), "labels.json:1: not UTF-8",
         {**GOOD, "labels.json": '["n\xe9g", "pos"]'.encode("latin-1")}),
    Case("data: UTF-8 BOM, csv", run("dataset.name={d}"), files={"train.csv": "\ufeff" + csv_text(TRAIN), "test.csv": csv_text(TEST)},
         ok=True),
    Case("data: UTF-8 BOM, jsonl and labels.json", run("dataset.name={d}"), ok=True,
         files={"train.jsonl": "\ufeff" + jsonl_text(TRAIN), "test.jsonl": TEST, "labels.json": '\ufeff["neg", "pos"]'}),
    Case("data: CRLF, csv", run("dataset.name={d}"), ok=True,
         files={"train.csv": csv_text(TRAIN, newline="\r\n"), "test.csv": csv_text(TEST, newline="\r\n")}),
    Case("data: CRLF and BOM, tsv and jsonl", run("dataset.name={d}"), ok=True,
         files={"train.tsv": "\ufeff" + csv_text(TRAIN, "\t", "\r\n"), "test.jsonl": jsonl_text(TEST, "\r\n")}),
    Case("data: label out of labels.json", run("dataset.name={d}"), "train.jsonl, row 13: label 5 is not one of the 2 classes",
         {"train.jsonl": [*TRAIN, {"text": "odd", "label": 5}], "test.jsonl": TEST, "labels.json": '["neg", "pos"]'}),
    Case("data: label name not in labels.json", run("dataset.name={d}"), "test.jsonl, row 2: label 'maybe' is not one of",
         {"train.jsonl": TRAIN, "test.jsonl": [TEST[0], {"text": "?", "label": "maybe"}], "labels.json": '["neg", "pos"]'}),
    Case("data: labels.json not JSON", run("dataset.name={d}"), "labels.json: not valid JSON",
         {**GOOD, "labels.json": "neg, pos"}),
    Case("data: labels.json not a list", run("dataset.name={d}"), "labels.json: must be a non-empty JSON list of class names",
         {**GOOD, "labels.json": '{"0": "neg", "1": "pos"}'}),
    Case("data: labels.json repeats a name", run("dataset.name={d}"), "labels.json: class name(s) 'neg' appear more than once",
         {**GOOD, "labels.json": '["neg", "neg"]'}),
    Case("data: a single class", run("dataset.name={d}"), "train.jsonl has a single class ('neg')",
         {"train.jsonl": [r for r in TRAIN if r["label"] == "neg"], "test.jsonl": TEST[:2]}),
    Case("data: fewer examples than the label budget", run("dataset.name={d}", "dataset.labels_per_class=6"),
         "class 'neg' has 6 training examples, fewer than the 7 needed", GOOD),
    Case("data: duplicate ids", run("dataset.name={d}"), "train.jsonl: rows 1 and 13 have the same id 0",
         {"train.jsonl": [{"id": i % 12, **r} for i, r in enumerate(TRAIN + TRAIN[:1])], "test.jsonl": TEST}),
    Case("data: a huge text", run("dataset.name={d}"), "train.jsonl, row 13: a text of 1,200,000 characters",
         {"train.jsonl": [*TRAIN, {"text": "word " * 240_000, "label": "pos"}], "test.jsonl": TEST}),
    Case("data: empty texts", run("dataset.name={d}"), "train.csv: 2 row(s) with an empty text (rows 2, 3)",
         {"train.csv": "text,label\nfine,neg\n,pos\n   ,neg\n" + csv_text(TRAIN).split("\n", 1)[1], "test.jsonl": TEST}),
    Case("data: a line that is not JSON", run("dataset.name={d}"), "train.jsonl:2: not a JSON object",
         {"train.jsonl": jsonl_text(TRAIN[:1]) + "{oops\n", "test.jsonl": TEST}),
    Case("data: a .gz that is not gzip", run("dataset.name={d}"), "complete gzip file",
         {"train.jsonl.gz": jsonl_text(TRAIN), "test.jsonl": TEST}),
    Case("data: a truncated .gz", run("dataset.name={d}"), "train.jsonl.gz': Compressed file ended before",
         {"train.jsonl.gz": gzip.compress(jsonl_text(TRAIN).encode())[:-20], "test.jsonl": TEST}),
    Case("data: parquet that is not parquet", run("dataset.name={d}"), "valid, non-empty parquet file",
         {"train.parquet": b"PAR1 not really", "test.jsonl": TEST}),
    Case("data: unsupported format", run("dataset.name=files", "dataset.path={d}/train.txt", "dataset.test={d}/test.jsonl"),
         "train.txt' has an unsupported format; use one of .jsonl, .jsonl.gz, .csv, .tsv, .parquet",
         {"train.txt": "hello\tneg\n", "test.jsonl": TEST}),
    Case("data: token rows with a tag missing", run("dataset.name={d}", "dataset.labeled_size=2"),
         "train.jsonl, row 2: 2 tokens and 1 tags", {"train.jsonl": [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
                                                                   {"tokens": ["Peter", "said"], "tags": ["B-PER"]}],
                                                  "test.jsonl": [{"tokens": ["Bonn"], "tags": ["B-LOC"]}]}),
    Case("data: test_fraction and a test file", run("dataset.name={d}/all.csv", "dataset.test={d}/all.csv", "dataset.test_fraction=0.2"),
         "a test file ({d}/all.csv) is given too. Use one of them", {"all.csv": csv_text(TRAIN)}),
    Case("data: test_fraction beside a test file", run("dataset.name={d}", "dataset.test_fraction=0.2"),
         "has its own test file test.jsonl; dataset.test_fraction is for data without one", GOOD),
    Case("data: test_fraction out of range", run("dataset.name={d}/all.csv", "dataset.test_fraction=1.5"),
         "dataset.test_fraction must be at least 0 and below 1", {"all.csv": csv_text(TRAIN)}),
    Case("data: test_fraction leaves no test example", run("dataset.name={d}/all.csv", "dataset.test_fraction=0.01"),
         "dataset.test_fraction=0.01 of its 12 rows leaves no test example", {"all.csv": csv_text(TRAIN)}),
    Case("data: test_fraction on a dataset with its own test set", run("dataset.name=trec", "dataset.test_fraction=0.2"),
         "Unknown config key 'dataset.test_fraction' (for dataset 'trec')"),
    # ------------------------------------------------------------------ configs
    Case("config: unknown key", run("dataset.name=trec", "method=fixmatch", "selector.treshold=0.9"),
         "Unknown config key 'selector.treshold' (for selector 'threshold'). Did you mean 'selector.threshold'"),
    Case("config: unknown section", run("dataset.name=trec", "trian.steps=3"), "Unknown config key 'trian'. Did you mean 'train'"),
    Case("config: int expected", run("dataset.name=trec", "train.steps=abc"), "Config key 'train.steps' must be int, got 'abc'"),
    Case("config: float expected, a boolean given", run("dataset.name=trec", "train.lr=true"), "Config key 'train.lr' must be float, got True"),
    Case("config: seed not an integer", run("dataset.name=trec", "seed=first"), "Config key 'seed' must be an integer, got 'first'"),
    Case("config: zero steps", run("dataset.name=trec", "train.steps=0"), "train.steps must be at least 1, got 0"),
    Case("config: threshold above 1", run("dataset.name=trec", "method=fixmatch", "selector.threshold=1.5"),
         "Invalid value in section 'selector'"),
    Case("config: unknown device", run("dataset.name=trec", "train.device=tpu"), "train.device must be auto, cpu, cuda, cuda:N or mps"),
    Case("config: a name that reads as NaN", run("dataset.name=trec", "method=fixmatch", "distance.name=nan"),
         "Unknown distance 'nan'"),
    Case("config: a name that reads as a boolean", run("dataset.name=trec", "method=true"), "Unknown preset 'true'"),
    Case("config: a name that reads as a number", run("dataset.name=trec", "augmentation.strong=1e3"), "Unknown augmentation '1e3'"),
    Case("config: a TOML name read as NaN", ["run", "{d}/run.toml", *DATA, "dataset.name=trec", "--out", "{out}"],
         'quote a name that reads as a number or boolean: name = "nan"', {"run.toml": 'method = "fixmatch"\n[distance]\nname = nan\n'}),
    Case("config: missing file", ["run", "{d}/nope.toml", "--out", "{out}"], "Config file '{d}/nope.toml' not found"),
    Case("config: bad TOML", ["run", "{d}/bad.toml", "--out", "{out}"], "bad.toml' is not valid TOML", {"bad.toml": "method = fixmatch\n"}),
    Case("config: an override without a key", run("dataset.name=trec", "=3"), "Override '=3' is not key=value"),
    Case("config: a hub model, offline", ["run", "backbone.name=some-org/no-such-model", "dataset.name=trec", "train.steps=2",
                                          "dataset.test_limit=10", "--out", "{out}"],
         "Backbone 'some-org/no-such-model' is not a local directory and not in the Hugging Face cache"),
    # ------------------------------------------------------------------ grid files
    Case("grid: empty file", grid("{d}/g.toml"), "g.toml' is empty. Give it [axes]", {"g.toml": ""}),
    Case("grid: empty axis", grid("{d}/g.toml"), "axis 'distance.name' is empty", {"g.toml": '[axes]\n"distance.name" = []\n'}),
    Case("grid: an axis twice in the file", grid("{d}/g.toml"), "axis 'distance.name' is given twice",
         {"g.toml": '[axes]\n"distance.name" = ["l1"]\ndistance.name = ["kl"]\n'}),
    Case("grid: an axis twice in the file, as a table", grid("{d}/g.toml"), "axis 'distance.name' is given twice",
         {"g.toml": '[axes]\n"distance.name" = ["l1"]\n[axes.distance]\nname = ["kl"]\n'}),
    Case("grid: the seeds twice", grid("{d}/g.toml"), "give the seeds once, either as 'seeds' or as the axis 'seed'",
         {"g.toml": 'seeds = [0, 1]\n[axes]\nseed = [2]\n'}),
    Case("grid: bad TOML", grid("{d}/g.toml"), "g.toml' is not valid TOML", {"g.toml": "[axes\n"}),
    Case("grid: seeds not integers", grid("{d}/g.toml"), "seeds must be integers", {"g.toml": 'seeds = ["a"]\n'}),
    Case("grid: unknown grid key", grid("{d}/g.toml"), "unknown grid key 'method'", {"g.toml": 'method = "fixmatch"\n'}),
    Case("grid: a bad cell", grid("method=fixmatch", "distance.name=l1,l3"), "In grid cell 2 of 2 (distance.name=l3): Unknown distance 'l3'"),
    # ------------------------------------------------------------------ command lines
    Case("cli: two config files", ["run", "{d}/a.toml", "{d}/b.toml", "--out", "{out}"], "at most one config file"),
    Case("cli: unknown option", ["grid", "seed=0,1", "--wrokers", "2", "--out", "{out}"],
         "No such option '--wrokers'. (Did you mean one of: '--trackers', '--workers'?)"),
    Case("cli: zero workers", ["grid", "seed=0,1", "--workers", "0", "--out", "{out}"], "'--workers': 0 is not in the range x>=1"),
    Case("cli: bad devices", ["grid", "seed=0,1", "--devices", "gpu0", "--out", "{out}"], "--devices"),
    Case("cli: --out is a file", ["run", "dataset.name=trec", "--out", "{d}/file"], "is a file", {"file": "x"}),
    Case("cli: unknown command", ["rnu"], "No such command 'rnu'"),
    Case("cli: results of a missing directory", ["results", "{d}/nowhere"], "{d}/nowhere"),
    Case("cli: unknown results format", ["results", "{out}", "--format", "xml"], "'xml' is not one of"),
    Case("cli: report without -o", ["report", "{out}"], "Missing option '--output'"),
    Case("cli: cache clear without a name", ["cache", "clear"], "Say what to clear"),
    Case("cli: missing plugins directory", ["--plugins-dir", "{d}/nope", "plugins"], "Plugins directory '{d}/nope' does not exist"),
    # ------------------------------------------------------------------ after a finished run
    Case("finished run: --force with data that went bad", run("dataset.name={finished_data}", "--force"),
         "train.jsonl:1: not a JSON object"),
    Case("finished run: grid --force with data that went bad",
         ["grid", *DATA, "dataset.name={finished_data}", "seed=0", "--force", "--executor", "serial", "--out", "{out}", "--quiet"],
         "train.jsonl:1: not a JSON object"),
]


GRID_CELL_FAILED = re.compile(r"cell \d+ \(.*\) failed: ")  # how a grid reports a cell that failed (and goes on)


def expand(value: str, where: dict) -> str:
    for key, path in where.items():
        value = value.replace("{" + key + "}", str(path))
    return value


def write_files(directory: Path, files: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            (directory / name).write_bytes(content)
        elif isinstance(content, str):
            (directory / name).write_text(content, encoding="utf-8", newline="")
        else:
            write_jsonl(directory / name, content)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A runs directory holding one finished run on a local dataset (the good files)."""
    root = tmp_path_factory.mktemp("finished")
    write_files(root / "data", GOOD)
    out = root / "runs"
    result = CliRunner().invoke(main, ["run", *DATA, f"dataset.name={root / 'data'}", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*/result.json")
    return {"out": out, "data": root / "data", "result": path}


def runs_of(out: Path) -> dict[str, tuple]:
    """Every file of every run directory: content and modification time."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(out.glob("*/*")) if p.is_file() and not p.parent.name.startswith(".")}


@contextlib.contextmanager
def went_bad(data: Path | None, tmp_path: Path):
    """The finished run's data with a train file that is no longer JSON, for the duration."""
    if data is None:
        yield
        return
    shutil.copytree(data, tmp_path / "backup")
    (data / "train.jsonl").write_text("not json\n")
    try:
        yield
    finally:
        shutil.rmtree(data)
        shutil.copytree(tmp_path / "backup", data)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case, tmp_path, finished, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "case"
    write_files(d, case.files)
    out = finished["out"] if not case.ok else tmp_path / "runs"
    where = {"d": d, "out": out, "finished_data": finished["data"]}
    before = runs_of(finished["out"])
    with went_bad(finished["data"] if "{finished_data}" in " ".join(case.args) else None, tmp_path):
        result = CliRunner().invoke(main, [expand(a, where) for a in case.args])
    output = result.output
    assert "Traceback" not in output and isinstance(result.exception, (SystemExit, type(None))), (output, result.exception)
    if case.ok:
        assert result.exit_code == 0, output
        assert "finished" in output and len(list(out.glob("*/result.json"))) == 1
        return
    assert result.exit_code != 0, output
    errors = [line for line in output.splitlines() if line.startswith("Error:") or GRID_CELL_FAILED.match(line)]
    assert len(errors) == 1, output
    assert expand(case.message, where) in errors[0], output
    assert runs_of(finished["out"]) == before  # the finished run, and every other run there, untouched


def test_the_table_covers_what_it_says():
    kinds = [case.id.split(":")[0] for case in CASES]
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)
    assert {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)} == {
        "data": 40, "config": 16, "grid": 9, "cli": 11, "finished run": 2}
    assert [case.id for case in CASES if case.ok] == ["data: UTF-8 BOM, csv", "data: UTF-8 BOM, jsonl and labels.json",
                                                       "data: CRLF, csv", "data: CRLF and BOM, tsv and jsonl"]
