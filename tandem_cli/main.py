"""The `tandem` command: Tandem's operator command line, built on the public `tandem_client`.

Global options, each also read from an environment variable:

    --target          TANDEM_TARGET          ConfigService's address (127.0.0.1:50051)
    --session-target  TANDEM_SESSION_TARGET  SessionService's address (127.0.0.1:50052)
    --api-key         TANDEM_API_KEY         sent as `authorization: Bearer <key>`
    --tls/--no-tls    TANDEM_TLS             TLS channels (implied by any of the files below)
    --ca-file, --cert-file, --key-file       TANDEM_CA_FILE, TANDEM_CERT_FILE, TANDEM_KEY_FILE

Read commands take `--output table|json|yaml` (see tandem_cli.render for the JSON shape):
list commands wrap their items (`{"configs": [...]}`, `{"sessions": [...]}`), `import`
prints `{"import": ImportResult, "skipped": [{"path", "why"}]}`, and `sessions tail` one
event per line.
`$EDITOR` (split like a shell would) is what `tandem edit` runs.

Exit codes, by the status class of the failed call:

    0   ok
    1   unexpected failure (a bug: the traceback is printed)
    2   usage: a bad option or argument, an unreadable file or package
    3   INVALID_ARGUMENT, OUT_OF_RANGE (and `validate` finding an error)
    4   NOT_FOUND
    5   ALREADY_EXISTS
    6   FAILED_PRECONDITION, ABORTED (a conflict: the config changed meanwhile)
    7   PERMISSION_DENIED, UNAUTHENTICATED
    8   RESOURCE_EXHAUSTED
    9   UNAVAILABLE, DEADLINE_EXCEEDED
    10  any other server error (INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, CANCELLED)
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.prompt import Confirm
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from tandem_cli import packages
from tandem_cli.render import (
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    OutputFormat,
    emit,
    exit_code,
    located_from_violations,
    render_error,
    render_located,
    when,
    wire,
)
from tandem_client import (
    Aborted,
    Config,
    Event,
    FailedPrecondition,
    InvalidArgument,
    Message,
    NotFound,
    PrepareResult,
    Session,
    Tandem,
    TandemError,
    Violation,
    text_of,
)

app = typer.Typer(
    help="Tandem's operator command line: configs, bundle packages, sessions and chat.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
sessions_app = typer.Typer(
    help="Sessions: list, inspect, follow and stop them.", no_args_is_help=True
)
app.add_typer(sessions_app, name="sessions")

# In a pipe, tables are as wide as they need (ids whole, for grep) unless COLUMNS says.
out = Console(
    soft_wrap=True,
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 240,
)
err = Console(stderr=True, soft_wrap=True)

# Packages at least this large get a progress bar while they are read.
LARGE_PACKAGE_BYTES = 1024 * 1024


class Exit(Exception):
    """Ends the command with an exit code; the message (if any) was printed already."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Failed(Exception):
    """A failed call whose error is to be shown against a document's lines."""

    def __init__(self, error: TandemError, source: str, text: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.source = source
        self.text = text


@dataclass(frozen=True)
class Options:
    """Where and how to connect, from the global options."""

    target: str
    session_target: str
    api_key: str | None
    tls: bool
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None

    def connect(self) -> Tandem:
        """A blocking client for one command; close it (use `with`)."""
        return Tandem(
            self.target,
            session_target=self.session_target,
            api_key=self.api_key,
            tls=self.tls,
            ca_file=self.ca_file,
            cert_file=self.cert_file,
            key_file=self.key_file,
        )


def _options(ctx: typer.Context) -> Options:
    options = ctx.find_root().obj
    assert isinstance(options, Options)
    return options


OutputOption = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="table for people; json (protojson names) or yaml."),
]


@app.callback()
def _global(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Option(envvar="TANDEM_TARGET", help="ConfigService's address, host:port.")
    ] = "127.0.0.1:50051",
    session_target: Annotated[
        str,
        typer.Option(envvar="TANDEM_SESSION_TARGET", help="SessionService's address, host:port."),
    ] = "127.0.0.1:50052",
    api_key: Annotated[
        str | None, typer.Option(envvar="TANDEM_API_KEY", help="API key, sent as a bearer token.")
    ] = None,
    tls: Annotated[bool, typer.Option(envvar="TANDEM_TLS", help="Connect over TLS.")] = False,
    ca_file: Annotated[
        Path | None, typer.Option(envvar="TANDEM_CA_FILE", help="CA certificates (PEM) to trust.")
    ] = None,
    cert_file: Annotated[
        Path | None,
        typer.Option(envvar="TANDEM_CERT_FILE", help="Client certificate (PEM), for mutual TLS."),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(envvar="TANDEM_KEY_FILE", help="Client certificate's key (PEM)."),
    ] = None,
) -> None:
    """Tandem's operator command line."""
    ctx.obj = Options(target, session_target, api_key, tls, ca_file, cert_file, key_file)


def _read_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(Text(f"error: cannot read {path}: {exc}"), soft_wrap=True)
        raise Exit(EXIT_USAGE) from None


# --- configs ---------------------------------------------------------------------------------


def _config_table(configs: list[Config], title: str = "") -> Table:
    table = Table(title=title or None)
    table.add_column("NAME", overflow="fold")
    # Ids are copied into other commands: folded, never cut short.
    table.add_column("ID", overflow="fold")
    table.add_column("KIND")
    table.add_column("REVISION", justify="right")
    table.add_column("UPDATED", no_wrap=True)
    table.add_column("DESCRIPTION")
    for c in configs:
        table.add_row(
            c.name, c.config_id, c.kind, str(c.revision), when(c.update_time), c.description
        )
    return table


@app.command()
def get(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="The config's name or id.")],
    revision: Annotated[int, typer.Option(help="A revision; 0 is the latest.")] = 0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Shows a config: its metadata and its YAML document."""
    with _options(ctx).connect() as client:
        found = client.configs.get(config, revision=revision)
    if emit(out, output, found):
        return
    out.print(_config_table([found]))
    if not out.is_terminal:
        out.out(found.yaml_content, end="", highlight=False)
        return
    out.print(Syntax(found.yaml_content, "yaml", line_numbers=True))


@app.command("list")
def list_configs(
    ctx: typer.Context,
    filter: Annotated[
        str, typer.Option(help="A filter, e.g. 'name = \"demo\"' or 'kind = AGENT'.")
    ] = "",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Lists configs (every page)."""
    with _options(ctx).connect() as client:
        configs = list(client.configs.iterate(filter=filter))
    if not emit(out, output, {"configs": configs}):
        out.print(_config_table(configs))


@app.command()
def revisions(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="The config's name or id.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Lists a config's revisions, newest first."""
    with _options(ctx).connect() as client:
        config_id = client.configs.get(config).config_id
        found: list[Config] = []
        token = ""
        while True:
            page = client.configs.revisions(config_id, page_token=token)
            found.extend(page.items)
            token = page.next_page_token
            if not token:
                break
    if not emit(out, output, {"revisions": found}):
        out.print(_config_table(found, title=config))


def _unified(before: str, after: str, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), old, new
        )
    )


def _show_diff(diff: str) -> None:
    if not diff:
        return
    if out.is_terminal:
        out.print(Syntax(diff, "diff"))
    else:
        out.out(diff, end="" if diff.endswith("\n") else "\n", highlight=False)


@app.command()
def diff(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="The config's name or id.")],
    rev1: Annotated[int, typer.Argument(help="The older revision.")],
    rev2: Annotated[int, typer.Argument(help="The newer revision.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Shows a unified diff between two revisions of a config."""
    with _options(ctx).connect() as client:
        first = client.configs.get(config, revision=rev1)
        second = client.configs.get(config, revision=rev2)
    text = _unified(
        first.yaml_content,
        second.yaml_content,
        f"{first.name}@{first.revision}",
        f"{second.name}@{second.revision}",
    )
    value = {
        "configId": first.config_id,
        "fromRevision": rev1,
        "toRevision": rev2,
        "diff": text,
    }
    if not emit(out, output, value):
        _show_diff(text)


@app.command()
def rollback(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="The config's name or id.")],
    revision: Annotated[int, typer.Argument(help="The revision whose content comes back.")],
) -> None:
    """Makes a new revision whose content equals an older one's."""
    with _options(ctx).connect() as client:
        current = client.configs.get(config)
        rolled = client.configs.rollback(current.config_id, revision, etag=current.etag)
    out.print(
        Text(f"rolled back {rolled.name}: revision {rolled.revision} equals revision {revision}")
    )


@app.command()
def validate(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A bundle document (YAML or markdown).")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Checks a bundle document without storing it; problems are shown against its lines."""
    text = _read_file(file)
    with _options(ctx).connect() as client:
        result = client.configs.validate(text)
    if not emit(out, output, result):
        problems = located_from_violations(result.violations)
        render_located(err, str(file), text, problems)
        if result.valid:
            out.print(Text(f"{file}: valid ({result.summary.name or 'unnamed'})"))
    if not result.valid:
        raise Exit(3)


def _document_name(client: Tandem, text: str, file: Path) -> str:
    # The document's own bundle name, as the server reads it; the file's stem otherwise.
    try:
        summary = client.configs.validate(text).summary
    except InvalidArgument:
        return file.stem
    return summary.name or file.stem


@app.command()
def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", "-f", help="The bundle document to store.")],
    name: Annotated[
        str | None, typer.Option(help="The config's name (default: the document's bundle name).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff against the stored revision only.")
    ] = False,
) -> None:
    """Creates a config, or updates the one of that name (guarded by the etag read)."""
    text = _read_file(file)
    with _options(ctx).connect() as client:
        config_name = name or _document_name(client, text, file)
        try:
            current: Config | None = client.configs.get(config_name)
        except NotFound:
            current = None
        before = current.yaml_content if current is not None else ""
        label = f"{config_name}@{current.revision}" if current is not None else "/dev/null"
        if dry_run:
            _show_diff(_unified(before, text, label, str(file)))
            verb = "create" if current is None else "update"
            if current is not None and before == text:
                verb = "leave unchanged"
            err.print(Text(f"dry run: would {verb} {config_name}; nothing written"))
            return
        try:
            if current is None:
                stored = client.configs.create(config_name, text)
                out.print(
                    Text(f"created {stored.name} ({stored.config_id}) revision {stored.revision}")
                )
            elif before == text:
                out.print(Text(f"unchanged {current.name} revision {current.revision}"))
                return
            else:
                stored = client.configs.update(
                    current.config_id, yaml_content=text, etag=current.etag
                )
                out.print(
                    Text(f"updated {stored.name} ({stored.config_id}) revision {stored.revision}")
                )
        except InvalidArgument as exc:
            raise Failed(exc, str(file), text) from None
    _print_warnings(stored.warnings, str(file), text)


def _print_warnings(warnings: list[Violation], source: str, text: str) -> None:
    render_located(err, source, text, located_from_violations(warnings))


def _run_editor(path: Path) -> None:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    command = [*shlex.split(editor), str(path)]
    try:
        completed = subprocess.run(command, check=False)
    except OSError as exc:
        err.print(Text(f"error: cannot run the editor {editor!r}: {exc}"), soft_wrap=True)
        raise Exit(EXIT_USAGE) from None
    if completed.returncode != 0:
        err.print(Text(f"error: the editor exited with {completed.returncode}; nothing written"))
        raise Exit(EXIT_USAGE)


@app.command()
def edit(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="The config's name or id.")],
) -> None:
    """Opens a config in $EDITOR, then stores it with the etag read.

    On a conflict (the config changed meanwhile) or a validation error the problem is shown
    and the editor reopens on your text. An unchanged or empty file writes nothing.
    """
    with _options(ctx).connect() as client, tempfile.TemporaryDirectory(prefix="tandem-") as d:
        current = client.configs.get(config)
        # Frontmatter plus markdown opens as markdown, so the editor highlights it well.
        suffix = ".md" if current.yaml_content.startswith("---") else ".yaml"
        path = Path(d) / (re.sub(r"[^A-Za-z0-9._-]", "_", current.name).lstrip(".") + suffix)
        text = current.yaml_content
        rejected: str | None = None
        while True:
            path.write_text(text, encoding="utf-8")
            _run_editor(path)
            edited = path.read_text(encoding="utf-8")
            if not edited.strip():
                err.print(Text("edit cancelled: the file is empty; nothing written"))
                return
            if edited == current.yaml_content:
                err.print(Text("edit cancelled: no changes; nothing written"))
                return
            if edited == rejected:
                # Saved again as it was refused: the user gave up on fixing it.
                err.print(Text("edit abandoned: the document is still invalid; nothing written"))
                raise Exit(3)
            try:
                stored = client.configs.update(
                    current.config_id, yaml_content=edited, etag=current.etag
                )
            except (Aborted, FailedPrecondition) as exc:
                render_error(err, exc)
                current = client.configs.get(current.config_id)
                err.print(
                    Text(
                        f"{current.name} is now at revision {current.revision}: reopening your "
                        "text; save it to store it over that revision"
                    )
                )
                text, rejected = edited, None
                continue
            except InvalidArgument as exc:
                render_error(err, exc, source=str(path), text=edited)
                err.print(Text("reopening your text; fix it, or save it unchanged to give up"))
                text, rejected = edited, edited
                continue
            out.print(
                Text(f"updated {stored.name} ({stored.config_id}) revision {stored.revision}")
            )
            _print_warnings(stored.warnings, str(path), edited)
            return


def _prepare_tables(result: PrepareResult) -> None:
    head = Table(show_header=False)
    head.add_row("config", f"{result.config_id}@{result.revision}")
    head.add_row("valid", "yes" if result.valid else "NO")
    head.add_row("default provider", result.default_provider)
    head.add_row("composed from", ", ".join(result.composed_from))
    out.print(head)
    if result.modules:
        modules = Table(title="modules")
        for column in ("KIND", "MODULE", "IMPLEMENTATION", "FIELD"):
            modules.add_column(column, overflow="fold")
        for m in result.modules:
            modules.add_row(m.kind, m.module, m.implementation, m.field)
        out.print(modules)
    if result.agents:
        agents = Table(title="agents")
        for column in ("NAME", "SOURCE", "DESCRIPTION"):
            agents.add_column(column)
        for a in result.agents:
            agents.add_row(a.name, a.source, a.description)
        out.print(agents)
    if result.context:
        context = Table(title="context")
        for column in ("NAME", "ORIGIN", "BYTES"):
            context.add_column(column)
        for c in result.context:
            context.add_row(c.name, c.origin, str(c.size_bytes))
        out.print(context)
    problems = located_from_violations([*result.violations, *result.warnings])
    render_located(err, result.config_id, result.composed_yaml, problems)


@app.command()
def prepare(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="The config's name or id.")],
    revision: Annotated[int, typer.Option(help="A revision; 0 is the latest.")] = 0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Shows what a session prepared from the config would get, without making one."""
    with _options(ctx).connect() as client:
        config_id = client.configs.get(config, revision=revision).config_id
        result = client.sessions.prepare(config_id, revision=revision)
    if not emit(out, output, result):
        _prepare_tables(result)
    if not result.valid:
        raise Exit(3)


# --- import ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _package(source: str) -> Iterator[packages.Package]:
    if source.startswith("git+"):
        with err.status(f"cloning {source}"), packages.cloned(source) as package:
            yield package
        return
    root = Path(source)
    count, size = packages.measure(root) if root.is_dir() else (0, 0)
    if size < LARGE_PACKAGE_BYTES or not err.is_terminal:
        yield packages.read_folder(root)
        return
    with Progress(
        TextColumn("reading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{count} files", total=size)
        yield packages.read_folder(root, lambda n: progress.advance(task, n))


@app.command("import")
def import_package(
    ctx: typer.Context,
    source: Annotated[
        str,
        typer.Argument(
            help="A package folder, or git+https://HOST/ORG/REPO@REF[#subdirectory=DIR] "
            "(git+file:// for a local repository); git runs here, never on the server."
        ),
    ],
    validate_only: Annotated[
        bool, typer.Option("--validate-only", help="Check the package; store nothing.")
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Imports a bundle package: every file, all or nothing."""
    try:
        with _package(source) as package, _options(ctx).connect() as client:
            with err.status(f"importing {len(package.files)} files ({package.size} bytes)"):
                result = client.configs.import_bundle(
                    package.files, source_uri=package.source_uri, validate_only=validate_only
                )
            skipped = package.skipped
    except packages.PackageError as exc:
        err.print(Text(f"error: {exc}"), soft_wrap=True)
        raise Exit(EXIT_USAGE) from None
    value = {"import": result, "skipped": [{"path": p, "why": why} for p, why in skipped]}
    if emit(out, output, value):
        return
    counts = Table(title=f"{result.namespace}{' (validate only)' if validate_only else ''}")
    for column in ("CREATED", "UPDATED", "UNCHANGED", "DELETED"):
        counts.add_column(column, justify="right")
    counts.add_row(
        str(result.created), str(result.updated), str(result.unchanged), str(result.deleted)
    )
    out.print(counts)
    if result.configs:
        out.print(_config_table(result.configs))
    for warning in result.warnings:
        where = warning.field or result.namespace
        if warning.line:
            where += f":{warning.line}:{warning.column}"
        err.print(Text(f"{where}: warning: {warning.message}"), soft_wrap=True)
    for path, why in skipped:
        err.print(Text(f"left out: {path} ({why})"), soft_wrap=True)


# --- sessions --------------------------------------------------------------------------------


def _session_table(sessions: list[Session]) -> Table:
    table = Table()
    table.add_column("ID", overflow="fold")
    table.add_column("STATUS")
    table.add_column("CONFIG", overflow="fold")
    table.add_column("MESSAGES", justify="right")
    table.add_column("AGENT")
    table.add_column("UPDATED", no_wrap=True)
    table.add_column("NAME")
    for s in sessions:
        table.add_row(
            s.session_id,
            s.status,
            f"{s.config_id}@{s.config_revision}",
            str(s.message_count),
            s.agent,
            when(s.update_time),
            s.display_name,
        )
    return table


@sessions_app.command("list")
def sessions_list(
    ctx: typer.Context,
    filter: Annotated[str, typer.Option(help="A filter, e.g. 'status = ACTIVE'.")] = "",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Lists sessions (every page)."""
    with _options(ctx).connect() as client:
        found = list(client.sessions.iterate(filter=filter))
    if not emit(out, output, {"sessions": found}):
        out.print(_session_table(found))


@sessions_app.command("get")
def sessions_get(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Shows a session."""
    with _options(ctx).connect() as client:
        found = client.sessions.get(session_id)
    if not emit(out, output, found):
        out.print(_session_table([found]))
        if found.error_message:
            out.print(Text(f"error: {found.error_message}"))


@sessions_app.command("messages")
def sessions_messages(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Shows a session's transcript, oldest first."""
    found: list[Message] = []
    with _options(ctx).connect() as client:
        token = ""
        while True:
            page = client.sessions.messages(session_id, page_token=token)
            found.extend(page.items)
            token = page.next_page_token
            if not token:
                break
    if emit(out, output, {"messages": found}):
        return
    for message in found:
        heading = Text(f"{message.sequence} {message.role}", style="bold")
        if out.is_terminal:
            out.rule(heading, align="left")
        else:
            out.print(Text("--- ") + heading)
        if message.content:
            out.print(Markdown(message.content) if out.is_terminal else Text(message.content))
        for call in message.tool_calls:
            out.print(Text(f"→ {call.name}({call.arguments_json})", style="cyan"))


@sessions_app.command("cancel")
def sessions_cancel(
    ctx: typer.Context, session_id: Annotated[str, typer.Argument(help="The session's id.")]
) -> None:
    """Cancels the session's running turn."""
    with _options(ctx).connect() as client:
        turn = client.sessions.cancel(session_id)
    out.print(Text(f"cancelled turn {turn}"))


@sessions_app.command("terminate")
def sessions_terminate(
    ctx: typer.Context, session_id: Annotated[str, typer.Argument(help="The session's id.")]
) -> None:
    """Terminates a session (it can be resumed later)."""
    with _options(ctx).connect() as client:
        found = client.sessions.terminate(session_id)
    out.print(Text(f"{found.session_id} {found.status}"))


@sessions_app.command("tail")
def sessions_tail(
    ctx: typer.Context,
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    after: Annotated[int, typer.Option(help="Start after this event sequence.")] = 0,
    follow: Annotated[
        bool, typer.Option(help="Keep following new turns (--no-follow ends when idle).")
    ] = True,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Follows a session's events as they happen; JSON prints one event per line."""
    with _options(ctx).connect() as client:
        view = ChatView(out)
        try:
            for event in client.sessions.stream(session_id, after_sequence=after, follow=follow):
                if output is OutputFormat.table:
                    view.show(event)
                elif output is OutputFormat.json:
                    out.out(json.dumps(wire(event), ensure_ascii=False), highlight=False)
                else:
                    emit(out, output, [event])
        finally:
            view.finish()


# --- chat ------------------------------------------------------------------------------------


class ChatView:
    """Shows a turn's events as they arrive: the reply streamed, then rendered as markdown."""

    def __init__(self, console: Console, *, show_user: bool = True) -> None:
        self.console = console
        # In a chat the user's message is on screen already, as typed.
        self.show_user = show_user
        self.buffer = ""
        self.thinking = ""
        self.depth = 0
        self.live: Live | None = None

    def _indent(self) -> str:
        return "│ " * self.depth

    def _renderable(self, final: bool) -> Any:
        parts: list[Any] = []
        if self.thinking:
            parts.append(Text(self.thinking, style="dim italic"))
        if self.buffer:
            parts.append(Markdown(self.buffer) if final else Text(self.buffer))
        return Group(*parts)

    def _update(self) -> None:
        if not self.console.is_terminal:
            return
        if self.live is None:
            self.live = Live(self._renderable(False), console=self.console, refresh_per_second=12)
            self.live.start()
        else:
            self.live.update(self._renderable(False))

    def finish(self) -> None:
        """Ends the streamed segment: its text is rendered as markdown."""
        # Let go of the live display first: a Ctrl-C can land inside stop(), and the
        # handler that cancels the turn finishes the view again; a second stop() of the
        # same display would fail (rich pops its render hook twice).
        live, self.live = self.live, None
        if live is not None:
            try:
                live.update(self._renderable(True))
            finally:
                live.stop()
        elif self.buffer or self.thinking:
            if self.thinking:
                self.console.print(Text(self.thinking, style="dim"))
            if self.buffer:
                self.console.out(self.buffer, highlight=False)
        self.buffer = ""
        self.thinking = ""

    def line(self, text: str, style: str = "") -> None:
        """A line of its own (a tool call, an agent), after the text so far."""
        self.finish()
        self.console.print(Text(self._indent() + text, style=style), soft_wrap=True)

    def show(self, event: Event) -> None:
        """Shows one event."""
        kind = event.kind
        if kind == "content_delta":
            self.buffer += event.text
            self._update()
        elif kind == "thinking_delta":
            self.thinking += event.text
            self._update()
        elif kind == "turn_started" and event.message is not None and self.show_user:
            self.line(f"» {event.message.content}", "bold")
        elif kind == "tool_call_started":
            self.line(f"→ {event.name}({event.arguments_json})", "cyan")
        elif kind == "tool_call_completed":
            result = event.result if len(event.result) <= 2000 else event.result[:2000] + " …"
            self.line(
                f"{'✗' if event.is_error else '←'} {result}", "red" if event.is_error else "green"
            )
        elif kind == "agent_started":
            self.line(f"┌ agent {event.name} ({event.child_session_id})", "magenta")
            self.depth += 1
        elif kind == "agent_completed":
            self.depth = max(0, self.depth - 1)
            detail = f": {event.error_message}" if event.error_message else ""
            self.line(f"└ agent {event.name} {event.outcome}{detail}", "magenta")
        elif kind == "approval_requested":
            self.line(f"? approval asked for {event.name}({event.arguments_json})", "yellow")
        elif kind == "approval_decided":
            verdict = "approved" if event.approved else "denied"
            self.line(f"  {verdict}{': ' + event.reason if event.reason else ''}", "yellow")
        elif kind == "turn_failed":
            self.line(f"turn failed: {event.error or event.error_message}", "bold red")
        elif kind == "turn_cancelled":
            self.line(f"turn cancelled{': ' + event.reason if event.reason else ''}", "yellow")
        elif kind == "turn_completed":
            self.finish()


def _ask_approval(client: Tandem, session_id: str, event: Event) -> None:
    try:
        approve = Confirm.ask(
            f"Allow {event.name} with {event.arguments_json or '{}'}?", console=err, default=False
        )
    except EOFError:
        approve = False
    decision = client.sessions.decide_approval(
        session_id, event.tool_call_id, approve, "" if approve else "denied at the prompt"
    )
    if decision.resumed:
        err.print(Text("turn resumed", style="dim"))


def _turn(client: Tandem, session_id: str, message: str, view: ChatView) -> list[Event]:
    events: list[Event] = []
    stream = client.sessions.chat(session_id, message)
    try:
        for event in stream:
            events.append(event)
            view.show(event)
            if event.kind == "approval_requested":
                view.finish()
                _ask_approval(client, session_id, event)
    except KeyboardInterrupt:
        view.finish()
        with contextlib.suppress(TandemError):
            stream.close()
        err.print(Text("cancelling the turn (Ctrl-C again to exit)", style="yellow"))
        with contextlib.suppress(TandemError):
            client.sessions.cancel(session_id)
            # The rest of the turn, through its end, so the outcome is shown.
            after = events[-1].sequence if events else 0
            for event in client.sessions.stream(session_id, after_sequence=after):
                events.append(event)
                view.show(event)
        return events
    finally:
        view.finish()
    return events


def _open_session(client: Tandem, config: str | None, session_id: str | None) -> str:
    if session_id:
        session = client.sessions.get(session_id)
        if session.status == "CREATED":
            client.sessions.start(session.session_id)
        return session.session_id
    if not config:
        err.print(Text("error: name a config, or a session with --session"))
        raise Exit(EXIT_USAGE)
    found = client.configs.get(config)
    session = client.sessions.create(found.config_id, start=True)
    err.print(Text(f"session {session.session_id}", style="dim"))
    return session.session_id


@app.command()
def chat(
    ctx: typer.Context,
    config: Annotated[
        str | None, typer.Argument(help="A config's name or id: starts a new session on it.")
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Continue this session instead.")
    ] = None,
    once: Annotated[
        str | None,
        typer.Option(
            "--once", help="Send one message, print the reply and exit (plain in a pipe)."
        ),
    ] = None,
) -> None:
    """Chats with a config's agent: replies stream as they arrive.

    Tool calls show their arguments and results, child agents are nested, and approvals
    are asked at the prompt. Ctrl-C cancels the running turn; a second Ctrl-C exits.
    """
    with _options(ctx).connect() as client:
        session_id = _open_session(client, config, session)
        if once is not None:
            if out.is_terminal:
                events = _turn(client, session_id, once, ChatView(out, show_user=False))
            else:
                events = []
                for event in client.sessions.chat(session_id, once):
                    events.append(event)
                    if event.kind == "approval_requested":
                        _ask_approval(client, session_id, event)
                out.out(text_of(events), highlight=False)
            _end_of_turn(events)
            return
        view = ChatView(out, show_user=False)
        while True:
            try:
                message = out.input(Text("you> ", style="bold blue"))
            except EOFError:
                out.print()
                return
            except KeyboardInterrupt:
                out.print()
                raise Exit(EXIT_INTERRUPTED) from None
            if not message.strip():
                continue
            _end_of_turn(_turn(client, session_id, message, view), exit_on_failure=False)


def _end_of_turn(events: list[Event], *, exit_on_failure: bool = True) -> None:
    last = events[-1] if events else None
    if last is not None and last.kind == "turn_cancelled" and exit_on_failure:
        # A script must not take a stopped reply for a whole one: cancelled here (Ctrl-C)
        # or by anyone else, the turn was interrupted.
        reason = f": {last.reason}" if last.reason else ""
        err.print(Text(f"error: the turn was cancelled{reason}"))
        raise Exit(EXIT_INTERRUPTED)
    if last is None or last.kind != "turn_failed":
        return
    if last.error is not None:
        render_error(err, last.error)
        if exit_on_failure:
            raise Exit(exit_code(last.error))
    elif exit_on_failure:
        err.print(Text(f"error: the turn failed: {last.error_message}"))
        raise Exit(10)


@app.command()
def version() -> None:
    """Prints the installed Tandem version."""
    from importlib.metadata import version as installed

    typer.echo(installed("tandem"))


def main() -> None:
    """The console script's entry point: runs a command, and maps failures to exit codes."""
    try:
        app()
    except Exit as exc:
        sys.exit(exc.code)
    except Failed as exc:
        render_error(err, exc.error, source=exc.source, text=exc.text)
        sys.exit(exit_code(exc.error))
    except TandemError as exc:
        render_error(err, exc)
        sys.exit(exit_code(exc))
    except KeyboardInterrupt:
        err.print(Text("interrupted", style="yellow"))
        sys.exit(EXIT_INTERRUPTED)
    except Exception:
        err.print_exception()
        sys.exit(EXIT_UNEXPECTED)


__all__ = ["app", "main"]
