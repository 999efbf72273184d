"""Whether any /start can ever claim the members of a pool template, and else what keeps it from matching.

A /start claims a member when `pools.difference(template, spec)` is None, `spec` being what `objects.derive`
derives from the body, the key's profile and the gateway's settings. Some parts of that spec come from the
settings alone: the resources (base resources x an accepted `resource_factor`), the workspace, the default pull
policy and runtime class, the URL variables of the routing mode. A template that disagrees with them is never
claimed, however the /start is written; its members would only hold capacity.

`check` finds out with the derivation the gateway uses: it derives the spec of the /start closest to the template
(the template's image, command, ids, class and pull policy, once per accepted factor, from a key whose profile adds
the template's environment, nodeSelector and tolerations) and compares it with `pools.difference`. Nothing here
knows what the gateway writes: a new routing mode, or a new variable, is followed through `build_environment`.
A /start may send the gateway's own variables (RUNTIME_URL, ...) itself, replacing the gateway's values, so a
template that differs only there still matches such a /start: `check` says so separately (`overrides`). The
operator reports the answer on the pool (docs/pools.md "A pool no /start can match").
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import ValidationError

from kubehands.crd import conditions as c
from kubehands.crd.constants import ENV_DEFERRED_INIT
from kubehands.spec import objects, pools
from kubehands.spec.errors import InvalidRequest
from kubehands.spec.profile import Profile
from kubehands.spec.request import StartRequest, resources_for, runtime_class_for
from kubehands.spec.settings import SpecSettings

# Stand-in for what does not shape the spec: the session (and the key's name).
_SESSION = "pool-template"
# The template fields a /start body sets itself, and the body field for each.
_SECURITY = (("runAsUser", "run_as_user"), ("runAsGroup", "run_as_group"), ("fsGroup", "fs_group"))
# The Matchable/Ready reason of the first field that differs (`pools.difference` names it).
_REASONS = {
    "resources": c.RESOURCES_NOT_OFFERED,
    "runtimeClassName": c.RUNTIME_CLASS_NOT_OFFERED,
    "workspace": c.WORKSPACE_MISMATCH,
    "imagePullPolicy": c.PULL_POLICY_MISMATCH,
}
# Where the gateway's value of a field comes from.
_WHY = {
    "runtimeClassName": "KUBEHANDS_DEFAULT_RUNTIME_CLASS",
    "workspace": "KUBEHANDS_WORKSPACE_SIZE, KUBEHANDS_WORKSPACE_MOUNT_PATH, KUBEHANDS_WORKSPACE_STORAGE_CLASS",
    "imagePullPolicy": "KUBEHANDS_IMAGE_PULL_POLICY",
}


@dataclass(frozen=True)
class Mismatch:
    reason: str  # a stable CamelCase reason (`kubehands.crd.conditions`)
    message: str  # what differs, and what to change


def _written(settings: SpecSettings) -> dict[str, str]:
    return {e["name"]: e["value"] for e in objects.build_environment(_request({}), _caller({}), settings)}


def _written_in_any_mode(settings: SpecSettings) -> set[str]:
    """Every variable the gateway writes in some routing mode: one it does not write in this mode is left over from
    a template made for another mode."""
    modes = get_args(SpecSettings.model_fields["routing_mode"].annotation) or (settings.routing_mode,)
    names: set[str] = set()
    for mode in modes:
        other = settings.model_copy(update={"routing_mode": mode, "inject_url_env": True})
        names |= set(_written(other))
    return names


def _request(body: Mapping[str, Any]) -> StartRequest:
    return StartRequest.model_validate({"session_id": _SESSION, "image": "pool-template", **body})


@dataclass(frozen=True)
class _Caller:
    """A key whose profile adds the template's environment, nodeSelector and tolerations."""

    name: str
    profile: Profile


def _caller(profile: Mapping[str, Any]) -> _Caller:
    return _Caller(name=_SESSION, profile=Profile.model_validate(profile))


def _closest(
    template: Mapping[str, Any], settings: SpecSettings, *, gateway_env: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The /start body (without its factor) and the key profile that come closest to `template`. With
    `gateway_env`, the variables the gateway writes itself (in any routing mode) are left to the gateway rather
    than sent with the template's values."""
    security = template.get("securityContext") or {}
    body: dict[str, Any] = {
        "image": template.get("image"),
        "command": template.get("command"),
        "working_dir": template.get("workingDir"),
        "runtime_class": template.get("runtimeClassName"),
        "image_pull_policy": template.get("imagePullPolicy"),
        **{theirs: security.get(ours) for ours, theirs in _SECURITY},
    }
    left = _written_in_any_mode(settings) if gateway_env else set()
    env = {k: v for k, v in pools.env_map(template.get("env")).items() if k not in left and k != ENV_DEFERRED_INIT}
    profile = {
        "env": env,
        "nodeSelector": template.get("nodeSelector") or {},
        "tolerations": template.get("tolerations") or [],
    }
    return {k: v for k, v in body.items() if v is not None}, profile


def _shown(value: Any) -> str:
    return "unset" if value in (None, {}, []) else json.dumps(value, sort_keys=True)


def _env_mismatch(name: str, template: Mapping[str, Any], spec: Mapping[str, Any], settings: SpecSettings) -> Mismatch:
    have = pools.env_map(template.get("env")).get(name)
    want = pools.env_map(spec.get("env")).get(name)
    if want is None:
        inject = "" if settings.inject_url_env else " (KUBEHANDS_INJECT_URL_ENV is off)"
        text = f"env {name}: the gateway does not write it in {settings.routing_mode} routing mode{inject}; remove it"
    elif have is None:
        text = f"env {name}: missing; the gateway writes {want!r} and the variable is boot-only: add it"
    else:
        text = f"env {name}: the template has {have!r}, the gateway writes {want!r}: set it to that"
    return Mismatch(c.GATEWAY_ENV_MISMATCH, text)


def _field_mismatch(
    field: str, template: Mapping[str, Any], spec: Mapping[str, Any], settings: SpecSettings
) -> Mismatch:
    if field == "resources":
        offered = "; ".join(f"factor {f}: {_shown(resources_for(settings, f, {}))}" for f in settings.resource_factors)
        text = (
            f"resources: the template has {_shown(template.get(field))}, but a /start gets the gateway's base "
            f"resources (KUBEHANDS_BASE_RESOURCES) times one of its factors (KUBEHANDS_RESOURCE_FACTORS): {offered}; "
            "set resources to one of these"
        )
    else:
        why = f" (from {_WHY[field]})" if field in _WHY else ""
        want = spec.get(field)
        text = f"{field}: the template has {_shown(template.get(field))}, the gateway derives {_shown(want)}{why}: " + (
            f"set it to {_shown(want)}" if want not in (None, {}, []) else "remove it"
        )
    return Mismatch(_REASONS.get(field, c.TEMPLATE_MISMATCH), text)


def _differences(template: Mapping[str, Any], spec: Mapping[str, Any], settings: SpecSettings) -> list[Mismatch]:
    """Every field in which `template` differs from `spec`, by `pools.difference`: after each difference found, the
    template takes the spec's value there and is compared again."""
    current = dict(template)
    found: list[Mismatch] = []
    for _ in range(len(pools.TEMPLATE_FIELDS) + len(current.get("env") or []) + len(spec.get("env") or []) + 1):
        field = pools.difference(current, spec)
        if field is None:
            break
        if field.startswith("env."):
            name = field.removeprefix("env.")
            found.append(_env_mismatch(name, current, spec, settings))
            want = pools.env_map(spec.get("env")).get(name)
            env = [e for e in current.get("env") or [] if e.get("name") != name]
            current["env"] = env + ([{"name": name, "value": want}] if want is not None else [])
        elif field in pools.TEMPLATE_FIELDS:
            found.append(_field_mismatch(field, current, spec, settings))
            current[field] = spec.get(field)
        else:  # "volumes": the closest key has none
            found.append(Mismatch(c.TEMPLATE_MISMATCH, f"{field}: differs from what the gateway derives"))
            break
    return found


@dataclass(frozen=True)
class Matchability:
    """The answer for one template: `never` says why no /start can match it (empty: some /start can); `overrides`
    which of the gateway's own variables a matching /start must send itself, with other values than the gateway
    writes (RUNTIME_URL, ...): possible, but no client is expected to do it."""

    never: tuple[Mismatch, ...] = ()
    overrides: tuple[Mismatch, ...] = ()

    @property
    def matchable(self) -> bool:
        return not self.never

    def condition(self) -> tuple[str, str, str]:
        """The pool's Matchable condition: status, reason, message."""
        if self.never:
            return c.FALSE, self.never[0].reason, summary(self.never)
        if self.overrides:
            only = "; ".join(m.message for m in self.overrides)
            return (
                c.TRUE,
                c.GATEWAY_ENV_OVERRIDDEN,
                f"only a /start that sends these variables itself can match: {only}",
            )
        return c.TRUE, c.TEMPLATE_MATCHABLE, "a /start can match this template"


def _refused(detail: str) -> Matchability:
    return Matchability(
        never=(Mismatch(c.REQUEST_REFUSED, f"the gateway refuses a /start with this template's values: {detail}"),)
    )


def check(template: Mapping[str, Any], settings: SpecSettings) -> Matchability:
    """Whether some /start can match `template` (a pool's `spec.template`, as the API server stores it) on a gateway
    with `settings`. Every mismatch is reported (each says what to change), the main one first."""
    body, profile = _closest(template, settings, gateway_env=False)
    plain_body, plain_profile = _closest(template, settings, gateway_env=True)
    try:
        caller, plain_caller = _caller(profile), _caller(plain_profile)
        _request(body)
    except ValidationError as e:
        return _refused("; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()))
    try:
        runtime_class_for(settings, template.get("runtimeClassName"))
    except InvalidRequest as e:
        return Matchability(never=(Mismatch(c.RUNTIME_CLASS_NOT_OFFERED, f"runtimeClassName: {e.detail}"),))
    candidates: list[list[Mismatch]] = []
    for factor in settings.resource_factors:
        try:
            spec = _derive(body, caller, factor, settings)
        except InvalidRequest as e:
            return _refused(e.detail)
        found = _differences(template, spec, settings)
        if not found:  # some /start matches; does one that leaves the gateway's variables to the gateway?
            overrides = _differences(template, _derive(plain_body, plain_caller, factor, settings), settings)
            return Matchability(overrides=tuple(overrides))
        candidates.append(found)
    # Report against the factor whose resources fit, if one does; else against the first factor.
    return Matchability(
        never=tuple(next((f for f in candidates if f[0].reason != c.RESOURCES_NOT_OFFERED), candidates[0]))
    )


def _derive(body: Mapping[str, Any], caller: _Caller, factor: int, settings: SpecSettings) -> dict[str, Any]:
    """The gateway's Sandbox spec for `body` with `resource_factor` `factor`."""
    request = _request({**body, "resource_factor": factor})
    return objects.derive(request, caller, settings).spec


def summary(mismatches: Sequence[Mismatch]) -> str:
    """One condition message for all of them."""
    return "no /start can match this template: " + "; ".join(m.message for m in mismatches)
