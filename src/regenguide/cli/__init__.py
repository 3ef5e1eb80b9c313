"""The `regenguide` command line (Typer). Each topic lives in its own module as a Typer sub-app;
this module only assembles them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="regenguide",
    help="RegenGuide: image-guided regenerative medicine from assessment to evidence.",
    no_args_is_help=True,
    add_completion=False,
)


def _register() -> None:
    # Sub-apps: one module per topic (`regenguide.cli.<topic>`), each exposing `app` (a Typer) or
    # `register(app)` for top-level commands. Add new topics to this list.
    from importlib import import_module

    for module_name in _TOPICS:
        module = import_module(f"regenguide.cli.{module_name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
        else:
            app.add_typer(module.app, name=module_name.replace("_", "-"))


# --- topics: one line each -------------------------------------------------------------------
_TOPICS: list[str] = [
    "evidence",
    "core",
    "registry",
    "lab",
    "din",
    "product",
    "regulatory",
    "consent",
    "kb",
    "plan",
    "imaging",
    "graft",
    "instrument",
]
# ----------------------------------------------------------------------------------------------

_register()
