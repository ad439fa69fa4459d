"""The composition root: build any component of the stack from its declaration."""

from __future__ import annotations

import importlib

from paxkit.component import Component, ComponentSpec
from paxkit.config import Settings, load_settings, stack_config


def declaration(name: str) -> ComponentSpec:
    """The ComponentSpec deploy/stack.toml names for `name` (importing its module only)."""
    module_name, _, attribute = stack_config().entry(name).declaration.partition(":")
    spec = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(spec, ComponentSpec) or spec.name != name:
        raise TypeError(f"{module_name}:{attribute} is not the ComponentSpec of {name!r}")
    return spec


def bootstrap(name: str, settings: Settings | None = None) -> Component:
    """Build the named component's objects, without side effects."""
    return declaration(name).build(settings or load_settings())
