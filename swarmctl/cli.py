"""Plumbing shared by the command modules: Typer apps, settings, the client and errors.

Every command group is made by `new_typer()`, whose group class turns any
`SwarmctlError` into one `Error: ...` line on stderr and its exit code, so no command
prints a traceback. Bad flag values go through `flag_value()`, which reports them like
Typer's own usage errors (exit code 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from swarmctl.client import ControlClient, ManagerAddress, TLSFiles
from swarmctl.errors import EXIT_FAILURE, ManagerUnreachable, SwarmctlError
from swarmctl.output import OutputFormat, check_format
from swarmctl.parsing import FlagValueError, parse_filters

T = TypeVar("T")


@dataclass
class Settings:
    """The global options, kept on the root context for the commands."""

    address: ManagerAddress
    debug: bool = False
    tls: TLSFiles | None = None
    client: ControlClient | None = field(default=None, repr=False)


def _is_cli_control_flow(exc: BaseException) -> bool:
    """Typer/Click exits and usage errors, which Typer reports itself."""
    return isinstance(exc, typer.Exit | typer.Abort | BrokenPipeError) or (
        callable(getattr(exc, "show", None)) and hasattr(exc, "exit_code")
    )


def report_error(message: str) -> None:
    """`Error: <message>` on stderr."""
    typer.echo(f"Error: {message}", err=True)


class SwarmctlGroup(TyperGroup):
    """A command group that reports errors as one line instead of a traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SwarmctlError as exc:
            report_error(exc.message)
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:
            if _is_cli_control_flow(exc):
                raise
            root = ctx.find_root()
            if isinstance(root.obj, Settings) and root.obj.debug:
                raise
            report_error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)")
            raise typer.Exit(EXIT_FAILURE) from None


def new_typer(help_text: str) -> typer.Typer:
    """A command group with swarmctl's settings: plain help, errors as `Error:` lines."""
    return typer.Typer(
        help=help_text,
        cls=SwarmctlGroup,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    if not isinstance(obj, Settings):  # pragma: no cover - the root callback always sets it
        raise SwarmctlError("swarmctl was started without its global options")
    return obj


def get_client(ctx: typer.Context) -> ControlClient:
    """The client of the manager named by the global options, opened once per run."""
    root = ctx.find_root()
    conf = settings(ctx)
    if conf.client is None:
        client = ControlClient(conf.address, debug=conf.debug, tls=conf.tls)
        conf.client = client
        root.call_on_close(client.close)
    return conf.client


def flag_value(parse: Callable[[str], T], value: str, flag: str) -> T:
    """`parse(value)`, a bad value reported as a usage error naming `flag` (exit code 2)."""
    try:
        return parse(value)
    except FlagValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{flag}'") from None


def optional_flag(parse: Callable[[str], T], value: str | None, flag: str) -> T | None:
    """`flag_value` of an optional flag: None when it was not given."""
    return None if value is None else flag_value(parse, value, flag)


def flag_values(parse: Callable[[str], T], values: Iterable[str] | None, flag: str) -> list[T]:
    return [flag_value(parse, v, flag) for v in values or ()]


def output_format(value: str | None) -> OutputFormat:
    try:
        return check_format(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--format'") from None


def filters(values: list[str] | None, allowed: Iterable[str]) -> dict[str, list[str]]:
    """The `-f/--filter` flags grouped by key; an unknown key is a usage error."""
    try:
        return parse_filters(values or (), list(allowed))
    except FlagValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'-f' / '--filter'") from None


def fetch_each(refs: Iterable[str], fetch: Callable[[str], T]) -> tuple[list[T], bool]:
    """`fetch(ref)` for every ref, reporting a failing one on stderr and going on.

    Returns what was found and whether every ref was. No manager at all stops at once.
    """
    found: list[T] = []
    ok = True
    for ref in refs:
        try:
            found.append(fetch(ref))
        except ManagerUnreachable:
            raise
        except SwarmctlError as exc:
            report_error(exc.message)
            ok = False
    return found, ok
