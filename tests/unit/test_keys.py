"""API keys: generation, sha256 storage, constant-time verification, Secret round trip, profiles."""

import base64
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from kubehands.api import keys

pytestmark = pytest.mark.unit


def test_generated_keys_are_random_and_prefixed() -> None:
    generated = {keys.generate_key() for _ in range(100)}
    assert len(generated) == 100
    assert all(k.startswith(keys.KEY_PREFIX) and len(k) > 40 for k in generated)


def test_hash_is_sha256_hex() -> None:
    assert keys.hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_verify_finds_the_matching_record_only() -> None:
    a, b = keys.generate_key(), keys.generate_key()
    records = [keys.KeyRecord("a", keys.hash_key(a)), keys.KeyRecord("b", keys.hash_key(b))]
    assert keys.verify(a, records) == records[0]
    assert keys.verify(b, records) == records[1]
    assert keys.verify("wrong", records) is None
    assert keys.verify("", records) is None
    assert keys.verify(None, records) is None
    assert keys.verify(keys.hash_key(a), records) is None  # the stored hash is not a key


def test_verify_uses_constant_time_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = keys.hmac.compare_digest

    def spy(x: str, y: str) -> bool:
        calls.append((x, y))
        return real(x, y)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    records = [keys.KeyRecord(str(i), keys.hash_key(str(i))) for i in range(3)]
    keys.verify("1", records)
    assert len(calls) == 3  # every record is compared, not only up to the match


def test_secret_round_trip_stores_only_the_hash() -> None:
    raw = keys.generate_key()
    profile = keys.Profile.model_validate({"env": {"A": "1"}, "maxRunning": 3, "nodeSelector": {"pool": "x"}})
    secret = keys.build_key_secret("team-a", keys.hash_key(raw), profile, "kubehands")
    assert secret["metadata"]["name"] == "kh-apikey-team-a"
    assert secret["metadata"]["labels"]["kubehands.dev/api-key"] == "true"
    assert raw not in json.dumps(secret)
    record = keys.record_from_secret(secret)
    assert record is not None
    assert (record.name, record.digest) == ("team-a", keys.hash_key(raw))
    assert record.profile.max_running == 3 and record.profile.env == {"A": "1"}
    assert keys.verify(raw, [record]) == record


@pytest.mark.parametrize(
    "secret",
    [
        {},
        {"metadata": {"labels": {"kubehands.dev/key-name": "x"}}, "data": {"sha256": "bm90LWhleA=="}},
        {"metadata": {"labels": {}}, "data": {"sha256": "YWJj"}},
        {"metadata": {"labels": {"kubehands.dev/key-name": "x"}}, "data": {"sha256": "!!!"}},
    ],
)
def test_malformed_secrets_are_ignored(secret: dict) -> None:
    assert keys.record_from_secret(secret) is None


@pytest.mark.parametrize("name", ["a", "team-a", "t0", "a" * 40])
def test_valid_key_names(name: str) -> None:
    assert keys.validate_key_name(name) == name


@pytest.mark.parametrize("name", ["", "Team", "-a", "a-", "a_b", "a" * 41, "a.b"])
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(ValueError):
        keys.validate_key_name(name)


@pytest.mark.parametrize(
    "profile",
    [
        {"env": {"1X": "y"}},
        {"volumes": [{"name": "d", "mountPath": "/d"}]},  # no source
        {"volumes": [{"name": "D", "mountPath": "/d", "configMap": {"name": "c"}}]},
        {"maxRunning": -1},
        {"unknown": 1},
        {"resourceCeiling": {"cpu": "lots"}},  # else every /start of the key failed
        {"resourceCeiling": {"memory": "-1Gi"}},
        {"env": {"..x": "1"}},
        {"maxLifetimeSeconds": 0},  # the CRD refuses 0: "no limit" is no ceiling, not 0
        {"maxLifetimeSeconds": -60},
        {"maxLifetimeSeconds": 2**31},  # above what the CRD accepts
        {"maxLifetimeSeconds": 10**30},
        {"maxLifetimeSeconds": True},  # strict: never a lifetime of 1 s
        {"maxLifetimeSeconds": "3600"},
        {"maxLifetimeSeconds": 3600.0},
        {"maxLifetimeSeconds": "1h"},
    ],
)
def test_invalid_profiles(profile: dict) -> None:
    with pytest.raises(ValidationError):
        keys.Profile.model_validate(profile)


def test_the_lifetime_ceiling_round_trips_through_the_secret() -> None:
    profile = keys.Profile.model_validate({"maxLifetimeSeconds": 3600})
    assert profile.max_lifetime_seconds == 3600
    secret = keys.build_key_secret("team-a", "0" * 64, profile, "kubehands")
    record = keys.record_from_secret(secret)
    assert record is not None and record.profile_error is None
    assert record.profile.max_lifetime_seconds == 3600
    assert json.loads(base64.b64decode(secret["data"]["profile.json"])) == {"maxLifetimeSeconds": 3600}


def test_profile_file_and_max_running(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kubehands.api.cli.keys import load_profile

    path = tmp_path / "profile.yaml"
    path.write_text(
        "env: {TEAM: data}\n"
        "resourceCeiling: {memory: 16Gi}\n"
        "volumes:\n  - {name: team-data, mountPath: /data, persistentVolumeClaim: {claimName: team-data}}\n"
    )
    profile = load_profile(path, 4, 3600)
    assert profile.max_running == 4 and profile.max_lifetime_seconds == 3600
    assert profile.env == {"TEAM": "data"} and profile.resource_ceiling == {"memory": "16Gi"}
    assert profile.volumes[0].persistent_volume_claim is not None
    assert load_profile(None, None) == keys.Profile()


def test_keys_cli_rejects_bad_input_before_any_api_call(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from kubehands.cli import main

    assert main(["keys", "--kubeconfig", str(tmp_path / "none"), "create", "Bad_Name"]) == 2
    bad = tmp_path / "p.yaml"
    bad.write_text("volumes: [{name: x}]\n")
    assert main(["keys", "--kubeconfig", str(tmp_path / "none"), "create", "ok", "--profile", str(bad)]) == 2
    assert "error" in capsys.readouterr().err
    bad.write_text("resourceCeiling: {cpu: four}\n")
    assert main(["keys", "--kubeconfig", str(tmp_path / "none"), "create", "ok", "--profile", str(bad)]) == 2
    assert "resourceCeiling" in capsys.readouterr().err
    bad.write_text("maxLifetimeSeconds: 0\n")
    assert main(["keys", "--kubeconfig", str(tmp_path / "none"), "create", "ok", "--profile", str(bad)]) == 2
    assert "maxLifetimeSeconds" in capsys.readouterr().err
    assert main(["keys", "--kubeconfig", str(tmp_path / "none"), "create", "ok", "--max-lifetime-seconds", "-1"]) == 2
    assert "maxLifetimeSeconds" in capsys.readouterr().err


def test_a_stored_profile_that_does_not_validate_still_authenticates() -> None:
    """A Secret written by hand or by an older CLI: the key works, the record says what is wrong, and /start
    refuses it (422) instead of failing with a 500 at every call."""
    raw = keys.generate_key()
    secret = keys.build_key_secret("team-a", keys.hash_key(raw), keys.Profile(), "kubehands")
    secret["data"]["profile.json"] = base64.b64encode(b'{"resourceCeiling": {"cpu": "lots"}}').decode()
    record = keys.record_from_secret(secret)
    assert record is not None and keys.verify(raw, [record]) == record
    assert record.profile_error and "resourceCeiling" in record.profile_error
    secret["data"]["profile.json"] = base64.b64encode(b"not json").decode()
    assert (keys.record_from_secret(secret) or keys.KeyRecord("", "")).profile_error


def _kubeconfig(path: Path, server: str) -> str:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return str(path)


def test_keys_cli_without_an_api_server_is_exit_1(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from kubehands.cli import main

    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:9")  # nothing listens on port 9
    assert main(["keys", "--kubeconfig", kubeconfig, "list"]) == 1
    assert capsys.readouterr().err.startswith("error: Kubernetes API not reachable: ")
