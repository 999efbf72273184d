"""API keys: generation, hashing, constant-time verification, and their Secret representation.

A key is stored only as the sha256 of the raw key, in a Secret labelled `kubehands.dev/api-key: "true"`
in the gateway's namespace. The key name is the tenant: it labels every Sandbox the key starts. Its profile
(`kubehands.spec.profile.Profile`) shapes every Sandbox the key starts.
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubehands.crd.constants import GROUP, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_PART_OF, PART_OF
from kubehands.spec.constants import MANAGED_BY_GATEWAY
from kubehands.spec.profile import Profile

# The API-key Secrets: labelled, named and owned by the gateway.
LABEL_API_KEY = f"{GROUP}/api-key"  # "true" on every API-key Secret
LABEL_KEY_NAME = f"{GROUP}/key-name"
COMPONENT_API_KEY = "api-key"
API_KEY_SECRET_PREFIX = "kh-apikey-"

KEY_PREFIX = "khk_"
KEY_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")  # a label value, short enough for names
HASH_FIELD = "sha256"
PROFILE_FIELD = "profile.json"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def validate_key_name(name: str) -> str:
    if not KEY_NAME_RE.match(name):
        raise ValueError(
            f"invalid key name {name!r}: use 1-40 lower-case letters, digits and '-', starting and ending "
            "with a letter or digit"
        )
    return name


def secret_name(key_name: str) -> str:
    return API_KEY_SECRET_PREFIX + key_name


@dataclass(frozen=True)
class KeyRecord:
    name: str
    digest: str
    profile: Profile = field(default_factory=Profile)
    # Why the stored profile could not be read (a Secret written by hand or by an older CLI). The key still
    # authenticates, but /start refuses it (422) rather than start sandboxes without the administrator's policy.
    profile_error: str | None = None


def _b64(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def build_key_secret(name: str, digest: str, profile: Profile, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(name),
            "namespace": namespace,
            "labels": {
                LABEL_PART_OF: PART_OF,
                LABEL_MANAGED_BY: MANAGED_BY_GATEWAY,
                LABEL_COMPONENT: COMPONENT_API_KEY,
                LABEL_API_KEY: "true",
                LABEL_KEY_NAME: name,
            },
        },
        "data": {
            HASH_FIELD: _b64(digest),
            PROFILE_FIELD: _b64(profile.model_dump_json(by_alias=True, exclude_defaults=True)),
        },
    }


def record_from_secret(secret: dict[str, Any]) -> KeyRecord | None:
    """Parse an API-key Secret (as a JSON dict); None when it is malformed."""
    labels = (secret.get("metadata") or {}).get("labels") or {}
    data = secret.get("data") or {}
    name = labels.get(LABEL_KEY_NAME)
    try:
        digest = base64.b64decode(data.get(HASH_FIELD, "")).decode("ascii").strip()
    except (ValueError, UnicodeDecodeError):
        return None
    if not name or len(digest) != 64:
        return None
    try:
        profile_json = base64.b64decode(data.get(PROFILE_FIELD, "")).decode("utf-8") or "{}"
        profile = Profile.model_validate(json.loads(profile_json))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return KeyRecord(name=name, digest=digest, profile_error=problems)
    except (ValueError, UnicodeDecodeError):
        return KeyRecord(name=name, digest=digest, profile_error=f"{PROFILE_FIELD} is not readable JSON")
    return KeyRecord(name=name, digest=digest, profile=profile)


def verify(raw: str | None, records: list[KeyRecord]) -> KeyRecord | None:
    """The record whose hash matches `raw`. Every record is compared, each in constant time."""
    if not raw:
        return None
    digest = hash_key(raw)
    found: KeyRecord | None = None
    for record in records:
        if hmac.compare_digest(record.digest, digest):
            found = record
    return found
