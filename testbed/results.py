"""Results of many runs as one table: ``load_results(DIR)`` -> a pandas DataFrame with one row
per run directory in DIR, the config keys that vary across those runs (flattened, dotted), the
result metrics and the status (done, failed, running, unfinished).

    >>> from testbed.results import load_results
    >>> frame = load_results("runs")
    >>> frame[frame.status == "done"].groupby(["distance.name", "selector.name"]).test_accuracy.mean()
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from testbed.errors import UserError

METRICS = ["test_accuracy", "test_accuracy_best_val", "test_macro_f1", "test_macro_f1_best_val", "val_accuracy_best",
           "best_val_step", "mask_rate", "pseudo_label_accuracy", "teacher_test_accuracy", "student_test_accuracy", "steps",
           "wall_seconds", "train_seconds",
           "test_entity_f1", "test_entity_f1_best_val"]  # token tasks (NER): strict IOB2 entity F1; test_accuracy is per token
RUN_ID = re.compile(r"[0-9a-f]{12}")
SEED = "seed"


def dataset_name(config: dict) -> str:
    """The name a run's dataset goes by in result.json and reports (whose groups it names), from its
    resolved config: ``dataset.label`` when set; else a dataset read from a path (``dataset.path``) by
    the path's directory name, or a file's name without its data suffix (``data/reviews`` -> ``reviews``,
    ``data/all.csv`` -> ``all``), so that two local datasets are two groups; else a hub dataset
    (``dataset.hub_id``) by its id; else ``dataset.name``. Only the config is read, never the disk: the
    same run has the same name wherever its report is made."""
    from testbed.data import SUFFIXES

    dataset = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    if dataset.get("label"):
        return str(dataset["label"])
    path = dataset.get("path")
    if isinstance(path, str) and path.strip():
        name = Path(path).name  # a trailing "/" is dropped
        suffix = next((s for s in SUFFIXES if name.endswith(s) and name != s), "")
        name = name[: len(name) - len(suffix)]
        return name or path  # "." stays "." (resolving it would name the report's working directory, not the run's)
    if isinstance(dataset.get("hub_id"), str) and dataset["hub_id"]:
        return dataset["hub_id"]
    return str(dataset.get("name", ""))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _damaged(run_dir: Path) -> str | None:
    """Why a run's config.json or result.json cannot be read, if one exists but cannot be."""
    for name in ("config.json", "result.json"):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            if not isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            return f"unreadable {name} ({type(exc).__name__}: {exc}), not as testbed writes it: delete {run_dir} to rerun"
    return None


def flatten(nested: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def scan_runs(out_dir: str | Path) -> list[dict]:
    """Every run directory in ``out_dir`` (named by a run id, or holding a config.json) as
    ``{run_id, status, config, result, error}``."""
    from testbed.runs import run_status

    out = Path(out_dir)
    if not out.is_dir():
        raise UserError(f"Runs directory {str(out)!r} not found. Pass the --out directory of `testbed run` or `testbed grid`.")
    runs = []
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config = _read_json(run_dir / "config.json")
        if config is None and not RUN_ID.fullmatch(run_dir.name):
            continue  # not a run directory (mlruns/, a tracker's or the user's own)
        error = _read_json(run_dir / "error.json") or {}
        damage = _damaged(run_dir)
        runs.append({"run_id": run_dir.name, "status": "damaged" if damage else run_status(out, run_dir.name),
                     "config": config or {}, "result": _read_json(run_dir / "result.json") or {},
                     "error": damage or error.get("error")})
    return runs


def load_results(out_dir: str | Path, all_columns: bool = False):
    """One row per run: ``run_id``, ``status``, every config key whose value differs between the
    runs where it is set (all keys with ``all_columns``; train.threads only then, it is not part
    of a run's identity), sorted by those keys with the seed last,
    the metrics of result.json (NaN until done) and ``error`` for failed runs."""
    return results_frame(scan_runs(out_dir), all_columns)


def results_frame(runs: list[dict], all_columns: bool = False):
    """``load_results`` of runs already read by ``scan_runs``."""
    import pandas as pd

    from testbed.config import EVERY_RUN_HAS, NOT_IN_RUN_ID

    # a key added later is its default in the configs of runs from before it: the same run, not another cell
    later = {}
    for (section, key), value in EVERY_RUN_HAS.items():
        later.update(flatten({section: {key: value}}))
    configs = [({k: v for k, v in later.items() if k not in config} | config) if config else config
               for config in (flatten(r["config"]) for r in runs)]
    keys: list[str] = []
    for config in configs:
        keys.extend(k for k in config if k not in keys)
    hidden = {".".join(pair) for pair in NOT_IN_RUN_ID}
    if not all_columns:  # a key varies when its values differ where it is set (a strategy's options are set only with it)
        keys = [k for k in keys if k not in hidden and len({_hashable(c[k]) for c in configs if k in c}) > 1]
    if SEED in keys:
        keys = [k for k in keys if k != SEED] + [SEED]
    rows = []
    for run, config in zip(runs, configs):
        row = {"run_id": run["run_id"], "status": run["status"]}
        row.update({k: config.get(k) for k in keys})
        row.update({m: run["result"].get(m) for m in METRICS})
        row["error"] = run["error"]
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["run_id", "status", *keys, *METRICS, "error"])
    for key in keys:  # integers stay integers beside a run that lacks the key (pandas would make them 10.0)
        values = [row[key] for row in rows if row[key] is not None]
        if values and len(values) < len(rows) and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            frame[key] = pd.array([row[key] for row in rows], dtype="Int64")
    for metric in METRICS:
        frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    if keys and len(frame):
        frame = frame.sort_values(by=keys, key=_sort_key, kind="stable").reset_index(drop=True)
    return frame


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _sort_key(column):
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column):
        return column
    return column.map(_hashable)


def _storable(frame):
    """Lists and mixed types as JSON text, so that CSV and parquet keep every column."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            kinds = {type(v) for v in frame[column] if v is not None}
            if len(kinds) > 1 or kinds & {list, dict, tuple}:
                frame[column] = frame[column].map(lambda v: None if v is None else (v if isinstance(v, str) else _hashable(v)))
    return frame


def write_results(frame, fmt: str = "table", output: str | Path | None = None) -> str | None:
    """Render ``frame`` as ``table`` | ``csv`` | ``json`` | ``parquet``; returns the text when
    ``output`` is None (parquet needs a file), else writes the file and returns None."""
    if output is not None:
        from testbed.resources import refuse_shared_data

        refuse_shared_data(output, "The output file", "Pass --output somewhere else.")
    if fmt == "parquet":
        if output is None:
            raise UserError("--format parquet writes a binary file: add --output FILE.parquet.")
        _storable(frame).to_parquet(output, index=False)
        return None
    if fmt == "csv":
        text = _storable(frame).to_csv(index=False)
    elif fmt == "json":
        text = _storable(frame).to_json(orient="records", indent=2)
    elif fmt == "table":
        if frame.empty:
            text = "(no runs)"
        else:
            shown = frame.dropna(axis=1, how="all")
            text = shown.to_string(index=False, na_rep="-", float_format=lambda x: f"{x:.4f}")
    else:
        raise UserError(f"Unknown format {fmt!r}: table, csv, json or parquet.")
    if output is None:
        return text.rstrip("\n")
    Path(output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return None
