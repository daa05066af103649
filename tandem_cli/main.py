"""The `tandem` command (work in progress; see issue 18)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Tandem's operator command line.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Prints the installed Tandem version."""
    from importlib.metadata import version as installed

    typer.echo(installed("tandem"))


def main() -> None:
    """The console script's entry point."""
    app()
