"""The command line: ``testbed run | grid | results | unfinished | report | plugins | presets | datasets | cache |
new-plugin``."""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings

import click

from testbed.errors import UserError
from testbed.scaffold import KINDS as SCAFFOLD_KINDS


class Group(click.Group):
    """Prints UserError as one ``Error: ...`` line (exit 1), and so a write the disk or the directory
    refused (full, a file-size limit, read-only); real bugs keep their traceback."""

    def invoke(self, ctx):
        from testbed.errors import StorageError, is_storage_error

        try:
            with warnings.catch_warnings():  # a warning is one line too: "Warning: ..." (a damaged cache shard, ...)
                warnings.showwarning = lambda message, *args, **kwargs: click.echo(f"Warning: {message}", err=True)
                return super().invoke(ctx)
        except UserError as exc:
            raise click.ClickException(" ".join(line.strip() for line in str(exc).splitlines() if line.strip())) from None
        except OSError as exc:
            if not is_storage_error(exc):
                raise
            raise click.ClickException(str(StorageError(exc.filename or "a file", exc, "access"))) from None


def registry(ctx: click.Context):
    """Load plugins once per command, printing each skipped plugin as a warning line."""
    from testbed.plugins import load_plugins

    obj = ctx.find_root().obj
    if "registry" not in obj:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj["registry"] = load_plugins(obj["plugins_dirs"], strict=obj["strict"] or None)
        for warning in caught:
            click.echo(f"Warning: {warning.message}", err=True)
    return obj["registry"]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plugins-dir", "plugins_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Also load every .py file in DIR as a plugin (repeatable; or $TESTBED_PLUGINS_DIR).")
@click.option("--strict-plugins", "strict", is_flag=True,
              help="Fail when a plugin cannot be loaded instead of skipping it (or $TESTBED_STRICT_PLUGINS=1).")
@click.version_option(package_name="testbed")
@click.pass_context
def main(ctx, plugins_dirs, strict):
    """A testbed for semi-supervised text classification with pretrained language models."""
    ctx.obj = {"plugins_dirs": list(plugins_dirs), "strict": strict}


@main.command()
@click.argument("args", nargs=-1)
@click.option("--out", "out_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Runs go to OUT/<run_id>/.")
@click.option("--force", is_flag=True, help="Rerun even if OUT/<run_id>/result.json exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def run(ctx, args, out_dir, force, quiet):
    """Train one run: testbed run [CONFIG.toml] [key=value ...]

    \b
    Examples:
      testbed run method=fixmatch dataset.name=trec backbone.name=tiny train.steps=30
      testbed run examples/demo.toml method=supervised seed=1
    """
    from testbed.config import load_toml, merge, parse_overrides, resolve
    from testbed.results import dataset_name
    from testbed.runs import execute

    files = [a for a in args if "=" not in a]
    if len(files) > 1:
        raise UserError(f"Expected at most one config file and key=value overrides, got files {files}.")
    user = load_toml(files[0]) if files else {}
    user = merge(user, parse_overrides([a for a in args if "=" in a]))
    reg = registry(ctx)
    cfg = resolve(user, reg)
    run_dir, result, ran = execute(cfg, reg, out_dir, force=force, progress=not quiet)
    status = "finished" if ran else "already finished (use --force to rerun)"
    tokens = "test_token_accuracy" in result  # a token task: accuracy and pseudo-labels count words
    click.echo(f"{cfg.method} on {dataset_name(cfg.resolved)} (seed {cfg.seed}): {status}\n"
               f"  test {'token ' if tokens else ''}accuracy {result['test_accuracy']:.4f} (last), "
               f"{_fmt(result['test_accuracy_best_val'])} (best on validation), "
               f"macro-F1 {result['test_macro_f1']:.4f}, {result['wall_seconds']:.0f} s\n"
               + (f"  entity F1 {result['test_entity_f1']:.4f} (last, strict IOB2), {_fmt(result.get('test_entity_f1_best_val'))} "
                  "(best on validation)\n" if result.get("test_entity_f1") is not None else "")
               + (f"  pseudo-labels: {result['mask_rate']:.1%} of unlabeled {'words' if tokens else 'examples'} selected, "
                  f"{_fmt(result['pseudo_label_accuracy'], '.1%')} of those correct\n" if result.get("mask_rate") is not None else "")
               + (f"  on {result['device']}, {result['precision']}\n" if result.get("device") else "")
               + f"  run directory: {run_dir}")


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="A JSON list: [{name, source, provides: {kind: [names]}}].")
@click.option("-v", "--verbose", is_flag=True, help="Each record on its own line with its summary.")
@click.pass_context
def plugins(ctx, as_json, verbose):
    """List loaded plugins and what each provides."""
    reg = registry(ctx)
    rows = [{"name": p.name, "source": p.source, "provides": p.provides} for p in reg.plugins]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}  ({row['source']})")
        for kind, names in row["provides"].items():
            if verbose:
                for name in names:
                    click.echo(f"  {kind:<13} {name}: {reg.records[kind][name][0].summary}")
            else:
                click.echo(f"  {kind:<13} {', '.join(names)}")
    for name, error in reg.failures:
        click.echo(f"{name}  SKIPPED: {error}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the presets and their settings as JSON.")
@click.pass_context
def presets(ctx, as_json):
    """List the named methods (presets) and the seam settings each one makes."""
    reg = registry(ctx)
    records = [reg.get("preset", name) for name in reg.names("preset")]
    if as_json:
        click.echo(json.dumps([{"name": r.name, "summary": r.summary, "settings": r.settings} for r in records], indent=2))
        return
    for r in records:
        click.echo(f"{r.name}: {r.summary}")
        for key, value in _flatten(r.settings):
            click.echo(f"    {key} = {json.dumps(value)}")


def _flatten(nested: dict, prefix: str = ""):
    for key, value in nested.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def datasets(ctx, as_json):
    """List the datasets found in the data directory: task, sizes and classes (a token task's tags;
    its sizes count sentences)."""
    from testbed.data import DEFAULT_TASKS, data_dir, rows_kind
    from testbed.types import DatasetContext

    reg = registry(ctx)
    rows = []
    for name in reg.names("dataset"):
        record = reg.get("dataset", name)
        if dataclasses.fields(record.options):
            continue  # needs options (a path, a hub id): nothing to list without them
        try:
            data = record.factory(record.options(), DatasetContext(data_dir=data_dir(), download=False))
        except UserError as exc:
            rows.append({"name": name, "error": str(exc)})
            continue
        task = data.task or record.task or DEFAULT_TASKS[rows_kind(data)]
        rows.append({"name": name, "task": task, "classes": len(data.label_names), "train": len(data.train), "test": len(data.test),
                     "dev": len(data.dev) if data.dev else 0, "unlabeled": len(data.unlabeled),
                     "labels": data.label_names, "summary": record.summary})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"data directory: {data_dir()}")
    click.echo(f"{'name':<10} {'task':<8} {'classes':>7} {'train':>7} {'dev':>6} {'test':>7} {'unlabeled':>9}  labels")
    for r in rows:
        if "error" in r:
            click.echo(f"{r['name']:<10} unavailable: {r['error']}")
        else:
            click.echo(f"{r['name']:<10} {r['task']:<8} {r['classes']:>7} {r['train']:>7} {r['dev']:>6} {r['test']:>7} "
                       f"{r['unlabeled']:>9}  {', '.join(r['labels'])}")
    click.echo("task: sentence = sentence classification (a label per text); token = token classification, e.g. NER (a tag per "
               "word; sizes are sentences, the label budget is dataset.labeled_size).")
    from testbed.data import SUFFIXES

    click.echo(f"Also: dataset.name=PATH, a directory or a file ({', '.join(SUFFIXES)}; with dataset.test=FILE, or "
               "dataset.test_fraction=0.2 to split a stratified test set off one labelled file); dataset.name=hub "
               "dataset.hub_id=ID (online).")


@main.command()
@click.argument("args", nargs=-1)
@click.option("--out", "out_dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Cells go to OUT/<run_id>/, shared with `testbed run` and other grids.")
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Cells run in parallel  [default: 1, or one per --devices].")
@click.option("--devices", default=None, metavar="LIST",
              help="Accelerators for the workers, e.g. 0,1,2,3 (cuda:0-3): each worker holds one and runs its cells there, "
                   "one cell per device at a time; cells that leave train.device unset run on them.")
@click.option("--executor", default="local", show_default=True, help="serial, local, dask, or an executor plugin.")
@click.option("--executor-option", "-X", "executor_options", multiple=True, metavar="KEY=VALUE",
              help="An option of the executor (repeatable), e.g. -X start_method=forkserver, -X scheduler=tcp://HOST:8786 (dask).")
@click.option("--dry-run", is_flag=True, help="Print the cells and their status; run nothing.")
@click.option("--force", is_flag=True, help="Rerun cells that are already finished.")
@click.option("--retry-failed", is_flag=True, help="Rerun cells that failed before (skipped otherwise).")
@click.option("--trackers", default=None, metavar="NAMES",
              help="Log every cell to these trackers too, e.g. mlflow,tensorboard (sets $TESTBED_TRACKERS).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def grid(ctx, args, out_dir, workers, devices, executor, executor_options, dry_run, force, retry_failed, trackers, quiet):
    """Run an ablation grid: testbed grid [GRID.toml] [key=v1,v2 ...] [key=value ...]

    key=v1,v2 adds an axis (or replaces the file's); key=value sets a base value ([1,2] and "a,b"
    stay one value). Finished cells are never rerun; an interrupted grid resumes where it stopped.

    \b
    Examples:
      testbed grid benchmarks/ablation_tiny.toml --workers 2
      testbed grid benchmarks/ablation_tiny.toml distance.name=l1,kl seed=0,1,2 --dry-run
      testbed grid benchmarks/ablation_minilm.toml --executor dask -X scheduler=tcp://HOST:8786
      testbed grid benchmarks/ablation_minilm.toml --devices 0,1,2,3 train.precision=bf16
    """
    from testbed.config import parse_overrides
    from testbed.grid import expand, load_grid, parse_devices, run_grid, save_grid_file, status_table, worker_count

    devices = parse_devices(devices) if devices is not None else ()
    workers = worker_count(workers, devices)
    files = [a for a in args if "=" not in a]
    if len(files) > 1:
        raise UserError(f"Expected at most one grid file and key=value overrides, got files {files}.")
    spec = load_grid(files[0] if files else None, [a for a in args if "=" in a])
    options = {key: value for key, value in _flatten(parse_overrides(list(executor_options)))}
    reg = registry(ctx)
    cells = expand(spec, reg, devices)  # every cell resolved and checked before anything runs
    if dry_run:
        lines, counts = status_table(cells, out_dir)
        click.echo("\n".join(lines))
        click.echo(f"{len(cells)} cells, {counts.get('done', 0)} already done, "
                   + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if status != "done")
                   + f" (in {out_dir})")
        return
    if files:
        save_grid_file(files[0], [a for a in args if "=" in a], out_dir)
    obj = ctx.find_root().obj
    plugins_dirs = list(obj["plugins_dirs"])
    report = run_grid(cells, reg, out_dir, executor=executor, workers=workers, executor_options=options, force=force,
                      retry_failed=retry_failed, plugins_dirs=plugins_dirs, strict=bool(obj["strict"]), progress=not quiet,
                      echo=click.echo if quiet else None, env={"TESTBED_TRACKERS": trackers} if trackers is not None else None,
                      devices=devices)
    click.echo(report.summary())
    click.echo(f"  results: testbed results {out_dir}")
    if not report.complete:
        ctx.exit(1)


@main.command()
@click.argument("out_dir", default="runs", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "parquet", "json"]), default="table", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="Write to FILE instead of stdout.")
@click.option("--all-columns", is_flag=True, help="Every config key, not only those that vary across the runs.")
def results(out_dir, fmt, output, all_columns):
    """One row per run in OUT_DIR: the config keys that vary across runs, the result metrics and
    the status (done, failed, running, unfinished). From Python: testbed.results.load_results(DIR)."""
    from testbed.results import load_results, write_results

    frame = load_results(out_dir, all_columns=all_columns)
    text = write_results(frame, fmt, output)
    if text is not None:
        click.echo(text)
    elif output:
        click.echo(f"{len(frame)} runs written to {output}", err=True)
    if fmt == "table":
        from testbed.runs import unfinished_runs
        from testbed.store import _human

        held = [r for r in unfinished_runs(out_dir) if r["status"] != "running"]
        if held:
            click.echo(f"{len(held)} run(s) without a result hold {_human(sum(r['bytes'] for r in held))} "
                       f"({_human(sum(r['checkpoint_bytes'] for r in held))} in checkpoints): `testbed unfinished {out_dir}`.",
                       err=True)


@main.command()
@click.argument("out_dir", default="runs", type=click.Path(file_okay=False))
@click.option("--remove", is_flag=True, help="Delete the unfinished runs (never one a live process is running).")
@click.option("--failed", "with_failed", is_flag=True, help="With --remove: the failed runs (error.json) too.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def unfinished(out_dir, remove, with_failed, as_json):
    """The runs in OUT_DIR without a result: interrupted (unfinished, resumable from their checkpoint),
    failed (error.json) or running now, with the last step each evaluated and the space its checkpoint
    and files hold. A run rerun (`testbed run`, `testbed grid`) goes on from its checkpoint; --remove
    deletes the unfinished ones instead."""
    from pathlib import Path

    from testbed.runs import remove_unfinished, unfinished_runs
    from testbed.store import _human

    if not Path(out_dir).is_dir():
        raise UserError(f"Runs directory {out_dir!r} not found. Pass the --out of your runs, e.g. `testbed unfinished runs`.")
    if remove:
        removed = remove_unfinished(out_dir, failed=with_failed)
        click.echo(f"Removed {len(removed)} run(s), {_human(sum(r['bytes'] for r in removed))}, from {out_dir}.")
        return
    rows = unfinished_runs(out_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"No unfinished runs in {out_dir}.")
        return
    click.echo(f"{'run_id':<12}  {'status':<10}  {'last step':>9}  {'checkpoint':>10}  {'size':>9}")
    for r in rows:
        step = "-" if r["last_evaluated_step"] is None else str(r["last_evaluated_step"])
        checkpoint = _human(r["checkpoint_bytes"]) if r["checkpoint_bytes"] else "-"
        click.echo(f"{r['run_id']:<12}  {r['status']:<10}  {step:>9}  {checkpoint:>10}  {_human(r['bytes']):>9}")
    held = sum(r["bytes"] for r in rows)
    click.echo(f"{len(rows)} run(s) without a result hold {_human(held)}. Rerun them to resume from their checkpoints, or "
               f"`testbed unfinished {out_dir} --remove` (--failed: the failed ones too).")


@main.command()
@click.argument("runs_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--output", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="The report directory: index.md, index.html, PNG plots, summary.csv.")
@click.option("--baseline", default="supervised", show_default=True, help="Method (or cell) the paired comparisons are against.")
@click.option("--group-by", "group_by", multiple=True, metavar="KEY",
              help="Config keys that name a cell (repeatable); default: the keys that vary across the runs.")
@click.option("--title", default=None, help="The report's title.")
@click.option("--compare-to", "compare_to", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="A second set of runs beside those of RUNS_DIR... (repeatable), e.g. committed baseline runs.")
@click.pass_context
def report(ctx, runs_dirs, out_dir, baseline, group_by, title, compare_to):
    """Render a comparison report of the runs in RUNS_DIR...: leaderboard with CIs, paired tests
    against a baseline, ranks, ablation effects, dynamics, calibration, cost, provenance. A run
    found in several RUNS_DIRs counts once.

    With --compare-to DIR, the runs of DIR (repeatable) are a second set beside those of RUNS_DIR:
    every cell's name ends in its set ("fixmatch [runs]", "fixmatch [compare]"), the same config
    in both sets counts in each, and the paired comparisons are against the compare set's baseline
    cell (e.g. "supervised [compare]") where it has one.

    \b
    Examples:
      testbed report runs/ablation -o reports/ablation --baseline supervised
      testbed report runs/hinge --compare-to runs/baselines -o reports/hinge
    """
    from testbed.report import render_report

    path = render_report(runs_dirs, out_dir, baseline=baseline, group_by=group_by, registry=registry(ctx), title=title,
                         echo=click.echo, compare_to=compare_to)
    click.echo(f"  open {path}  (Markdown: {path.with_name('index.md')})")


@main.command("new-plugin")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(SCAFFOLD_KINDS), help="The seam the plugin adds a strategy to.")
@click.option("--dir", "directory", default=None, type=click.Path(file_okay=False),
              help="The package directory to create (it must not exist)  [default: ./testbed-NAME].")
@click.option("--no-install", is_flag=True, help="Only write the package; do not `pip install --no-deps -e` it.")
@click.pass_context
def new_plugin(ctx, name, kind, directory, no_install):
    """Start a plugin package: a NAME strategy for the seam --kind, with its options dataclass, a
    factory that runs as written, a README and a test (the config through testbed.config.resolve,
    the factory, a tiny end-to-end run); then install it editable with this Python (--no-deps).

    \b
    Examples:
      testbed new-plugin hinge --kind distance
      testbed new-plugin confident --kind selector --dir plugins/confident --no-install
    """
    from testbed.scaffold import install, write_plugin

    made = write_plugin(name, kind, directory, registry(ctx))
    where = made.directory
    click.echo(f"Wrote {where}/ (the {kind} {name!r}, plugin {made.module}):")
    for relative, what in made.files.items():
        click.echo(f"  {where / relative}  {what}")
    if no_install:
        click.echo(f"Not installed (--no-install): `{sys.executable} -m pip install --no-deps -e {where}`, or use it as it is "
                   f"with `testbed --plugins-dir {where} ...`.")
        prefix = f"testbed --plugins-dir {where}"
    else:
        command = install(where)
        click.echo(f"Installed, editable: {' '.join(command[2:])}")
        prefix = "testbed"
    click.echo("Next:")
    click.echo(f"  {prefix} plugins                     # lists {made.module}: {kind} {name}")
    click.echo(f"  python -m pytest {where}              # its tests (a few seconds)")
    click.echo(f"  {prefix} run {made.example}")
    click.echo(f"  edit {where / (made.module + '.py')}")


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the cache directory, sizes and entries as JSON.")
@click.pass_context
def cache(ctx, as_json):
    """The cache under $TESTBED_CACHE: its entries by kind (augmentation views in views/,
    frozen-encoder outputs in features/, and any plugin's), with sizes; `testbed cache clear`
    removes them."""
    if ctx.invoked_subcommand is None:
        from testbed.store import cache_report

        click.echo(cache_report(as_json))


@cache.command("clear")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Remove every cache entry (views, features, any plugin's).")
def cache_clear(name, everything):
    """Remove the entries of NAME (an augmentation's views, an encoder's features, any producer
    `testbed cache` lists, or one entry directory), or --all."""
    from testbed.store import clear_cache

    click.echo(clear_cache(name, everything))


if __name__ == "__main__":
    sys.exit(main())
