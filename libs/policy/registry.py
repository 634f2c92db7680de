"""What the policy takes from the stage registry (``mailmoat_platform.stages``), read when a policy is
validated, never when this package is imported: the filter stages ``pipeline.filters`` may name, the
quarantine reasons only administrators release, the sections of filter stages whose models live in
their own packages, the mail-flow rule conditions stages add, and the checks a stage's section makes
across the whole policy (``check_policy``).

The registry is always asked through its module (``registry.stages()``), so a test may replace it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from mailmoat_platform import stages as registry
from mailmoat_platform.stages import RuleCondition, StageSpec


def filter_names() -> tuple[str, ...]:
    """The filter stages a policy may list in ``pipeline.filters``."""
    return registry.filter_names()


def admin_release_reasons() -> dict[str, str]:
    """``{reason: "admin"}`` for every reason in any stage's ``release_by``, in registry order."""
    return {reason: "admin" for spec in registry.stages() for reason in spec.release_by}


def section_stages(fields: Iterable[str]) -> dict[str, StageSpec]:
    """Filter stages whose policy section is not among ``fields`` (the policy's own sections), by section."""
    known = set(fields)
    return {
        spec.policy_section: spec
        for spec in registry.filters()
        if spec.policy_section and spec.policy_model and spec.policy_section not in known
    }


def stage_conditions(fields: Iterable[str]) -> dict[str, RuleCondition]:
    """The rule conditions the registry's stages add, by name. A name that is also one of ``fields`` (the
    built-in conditions) or that two stages add is an error of the registry."""
    known = set(fields)
    out: dict[str, RuleCondition] = {}
    owner: dict[str, str] = {}
    for spec in registry.stages():
        for name, condition in spec.conditions().items():
            if name in known or name in out:
                other = "a built-in condition" if name in known else f"a condition of stage {owner[name]}"
                raise registry.RegistryError(f"stage {spec.name}: rule condition {name!r} is already {other}")
            out[name] = condition
            owner[name] = spec.name
    return out


_ADAPTERS: dict[int, tuple[Any, TypeAdapter[Any]]] = {}


def adapter(value_type: Any) -> TypeAdapter[Any]:
    """A (cached) ``TypeAdapter`` of a type; keyed by identity, as ``Annotated`` types need not hash."""
    cached = _ADAPTERS.get(id(value_type))
    if cached is None or cached[0] is not value_type:
        cached = (value_type, TypeAdapter(value_type))
        _ADAPTERS[id(value_type)] = cached
    return cached[1]


def section_types(specs: Mapping[str, StageSpec]) -> tuple[dict[str, Any], list[InitErrorDetails]]:
    """The section model of each stage (by section), and an error for each that cannot be loaded."""
    types: dict[str, Any] = {}
    errors: list[InitErrorDetails] = []
    for section, spec in specs.items():
        try:
            types[section] = spec.policy_class()
        except (ImportError, AttributeError, ValueError) as exc:
            message = f"the model of stage {spec.name} ({spec.policy_model}) cannot be loaded: {exc}"
            error = PydanticCustomError("stage_model", message)
            errors.append(InitErrorDetails(type=error, loc=(section,), input=None))
    return types, errors


def default_section(spec: StageSpec) -> BaseModel:
    """A stage's policy section with its model's defaults (the section is absent)."""
    model = spec.policy_class()
    assert model is not None
    return model()


def validated(values: Mapping[str, Any], types: Mapping[str, Any]) -> tuple[dict[str, Any], list[InitErrorDetails]]:
    """Each value validated by the type of its name (with ``TypeAdapter``), and the errors, located at
    the name; a name without a type is left out (its error is the caller's)."""
    out: dict[str, Any] = {}
    errors: list[InitErrorDetails] = []
    for name, value in values.items():
        if name not in types:
            continue
        try:
            out[name] = adapter(types[name]).validate_python(value)
        except ValidationError as exc:
            errors += errors_under(exc, name)
    return out, errors


def check_sections(policy: Any, fields: Iterable[str], given: Iterable[str]) -> list[InitErrorDetails]:
    """The checks across the policy that filter stages' sections make: a section model may define
    ``check_policy(self, policy) -> None``, which raises ``ValueError`` when the policy is not consistent
    with the section (e.g. a mail-flow rule names something the section does not define); a message of
    the form ``field.path: reason`` is reported at that path. Called for every filter stage of the
    registry with a section (``fields``: the policy's own sections; ``given``: the stage sections the
    policy has, the others are their defaults), once the rest of the policy has validated; an error for
    each section that refuses. An absent section whose model cannot be loaded is not asked."""
    fields, given = set(fields), set(given)
    errors: list[InitErrorDetails] = []
    for spec in registry.filters():
        section = spec.policy_section
        if not section or (section not in fields and not spec.policy_model):
            continue
        if section not in fields and section not in given:
            try:
                spec.policy_class()
            except (ImportError, AttributeError, ValueError):
                continue
        check = getattr(policy.stage_section(section), "check_policy", None)
        if check is None:
            continue
        try:
            check(policy)
        except ValueError as exc:
            loc, reason = located(str(exc))
            errors.append(InitErrorDetails(type=PydanticCustomError("stage_policy_check", reason), loc=loc,
                                           input=None))
    return errors


_LOCATED = re.compile(r"([A-Za-z_][\w-]*(?:\.[\w-]+)*): (.+)", re.DOTALL)


def located(message: str) -> tuple[tuple[str | int, ...], str]:
    """A message of the form ``field.path: reason`` as its location and reason (the top level when it
    names no path)."""
    found = _LOCATED.fullmatch(message)
    if found is None:
        return (), message
    return tuple(int(p) if p.isdigit() else p for p in found.group(1).split(".")), found.group(2)


def errors_under(exc: ValidationError, *prefix: str | int) -> list[InitErrorDetails]:
    """The errors of ``exc``, their locations under ``prefix``, ready to be raised again together."""
    return [
        InitErrorDetails(type=PydanticCustomError(error["type"], error["msg"]), loc=(*prefix, *error["loc"]),
                         input=error["input"])
        for error in exc.errors()
    ]


def raise_errors(title: str, errors: list[InitErrorDetails]) -> None:
    """Raise the collected errors as one ``ValidationError`` (nothing when there are none)."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)
