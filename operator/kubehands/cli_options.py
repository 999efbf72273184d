"""Options a `kubehands` component takes before or after its subcommand.

`kubehands keys -n NS create NAME` and `kubehands keys create NAME -n NS` both work: the docs, `helm install`'s
notes and users' habits (kubectl takes `-n` anywhere) put them after it. A value given after the subcommand wins.
"""

import argparse
from collections.abc import Iterable
from typing import Any

# (flags, add_argument keyword arguments)
Option = tuple[tuple[str, ...], dict[str, Any]]


def add_options(parser: argparse.ArgumentParser, subcommands: Iterable[argparse.ArgumentParser],
                options: Iterable[Option]) -> None:
    """Add each option to `parser` and to every subcommand; a subcommand's copy has no default, so it only
    overrides what was given before the subcommand (or the default) when it is given itself."""
    subcommands = list(subcommands)
    for flags, kwargs in options:
        parser.add_argument(*flags, **kwargs)
        for subcommand in subcommands:
            subcommand.add_argument(*flags, **(kwargs | {"default": argparse.SUPPRESS}))
