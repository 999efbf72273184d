"""Kubernetes access shared by the operator, the gateway and the `kubehands` command.

One way to log in (explicit kubeconfig, else in-cluster, else `$KUBECONFIG` read at call time), one
spelling of the custom resources' coordinates (Sandbox, SandboxPool), and a timeout on every API call:
kubernetes_asyncio waits forever by default, so a stalled API server or a dead pooled connection would hang
a request or the operator's loops instead of failing fast. Timeouts surface as `TimeoutError` (the gateway answers 503).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import yaml
from aiohttp import ClientTimeout
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION

from kubehands.crd import constants

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
NOT_FOUND, CONFLICT, UNPROCESSABLE = 404, 409, 422

# Bounds a single API call. Watches pass their own, longer `_request_timeout`.
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0

Obj = dict[str, Any]
# What `_request_timeout` accepts (seconds, or an aiohttp timeout).
RequestTimeout = float | tuple[float] | ClientTimeout


class Coordinates(TypedDict):
    """A custom resource's coordinates, as keyword arguments of CustomObjectsApi calls and kopf decorators."""

    group: str
    version: str
    plural: str


@dataclass(frozen=True)
class CustomResource:
    group: str
    version: str
    plural: str

    def coordinates(self) -> Coordinates:
        """Keyword arguments for CustomObjectsApi calls and kopf decorators."""
        return {"group": self.group, "version": self.version, "plural": self.plural}


SANDBOXES = CustomResource(constants.GROUP, constants.VERSION, constants.PLURAL)
SANDBOX_POOLS = CustomResource(constants.GROUP, constants.VERSION, constants.POOL_PLURAL)


def owner_reference(owner: Mapping[str, Any], *, block_owner_deletion: bool = True) -> Obj:
    """A controller reference to `owner` (an API dict). Blocking deletion needs `update` on the owner's
    `finalizers` subresource where OwnerReferencesPermissionEnforcement is on."""
    metadata = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", constants.API_VERSION),
        "kind": owner.get("kind", constants.KIND),
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": block_owner_deletion,
    }


def labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


async def raise_for_status(response: Any) -> Any:
    """`response`, a `_preload_content=False` answer, when it is a success; else its ApiException, as a preloaded
    call would have raised (the client checks the status only when it reads the body itself)."""
    if 200 <= response.status <= 299:
        return response
    exc = ApiException(status=response.status, reason=response.reason)
    exc.body = await response.text()
    response.release()
    raise exc


def json_body[M](body: Mapping[str, Any], model: type[M]) -> M:
    """`body`, a plain API JSON dict, where the client's annotations name a model class (`model`).

    The generated clients serialise a dict as it is (`sanitize_for_serialization`), so the builders' dicts
    are sent unchanged; only the stubs insist on `V1Pod`, `V1Secret`, ... This returns `body` itself.
    """
    return cast(M, body)


class TimeoutApiClient(client.ApiClient):
    """An ApiClient that gives every call without its own `_request_timeout` a default one."""

    def __init__(self, configuration: client.Configuration, request_timeout: float) -> None:
        super().__init__(configuration)
        self.request_timeout = request_timeout

    def request(
        self,
        method: str,
        url: str,
        query_params: Any | None = None,
        headers: dict[str, Any] | None = None,
        post_params: dict[str, Any] | None = None,
        body: Any | None = None,
        _preload_content: bool = True,
        _request_timeout: RequestTimeout | None = None,
    ) -> Any:
        return super().request(
            method,
            url,
            query_params=query_params,
            headers=headers,
            post_params=post_params,
            body=body,
            _preload_content=_preload_content,
            _request_timeout=_request_timeout or self.request_timeout,
        )


async def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """An explicit kubeconfig; else the pod's service account; else `$KUBECONFIG` or ~/.kube/config.

    `$KUBECONFIG` is read now: the library fixes its default path when it is imported, and a process
    that sets the variable later (tests, `make run`) must still log in with the right file.
    """
    configuration = client.Configuration()
    if kubeconfig:
        await _load_kubeconfig(kubeconfig, configuration)
        return configuration
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        await _load_kubeconfig(os.environ.get("KUBECONFIG") or None, configuration)
    return configuration


async def _load_kubeconfig(path: str | None, configuration: client.Configuration) -> None:
    """The library's kubeconfig loader, whose errors for a missing or unreadable file (a bare "Invalid kube-config
    file. Expected key current-context", or a YAML error) become one ConfigException that names the file."""
    named = path or os.path.expanduser(KUBE_CONFIG_DEFAULT_LOCATION)
    if not any(os.path.isfile(p) for p in named.split(os.pathsep) if p):
        where = "" if path else ", and not in a cluster"
        raise ConfigException(f"no kubeconfig file at {named}{where}")
    try:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    except yaml.YAMLError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        raise ConfigException(f"{named} is not a kubeconfig: YAML: {first}") from exc


@dataclass
class Kube:
    """The API client and the calls both components make on custom resources, as plain JSON dicts."""

    api: client.ApiClient
    core: client.CoreV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def from_api(cls, api: client.ApiClient) -> "Kube":
        return cls(api=api, core=client.CoreV1Api(api), custom=client.CustomObjectsApi(api))

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    ) -> "Kube":
        return cls.from_api(TimeoutApiClient(await load_configuration(kubeconfig), request_timeout))

    def to_dict(self, obj: Any) -> Obj:
        """A client model as the API's JSON dict (camelCase keys)."""
        return dict(self.api.sanitize_for_serialization(obj))

    async def close(self) -> None:
        await self.api.close()

    # ---- Custom resources (Sandboxes, SandboxPools) ----------------------------------------------

    async def create_object(self, resource: CustomResource, namespace: str, body: Mapping[str, Any]) -> Obj:
        created = await self.custom.create_namespaced_custom_object(
            namespace=namespace, body=dict(body), **resource.coordinates()
        )
        return dict(created)

    async def get_object(self, resource: CustomResource, namespace: str, name: str) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            found = await self.custom.get_namespaced_custom_object(
                namespace=namespace, name=name, **resource.coordinates()
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        return dict(found)

    async def list_objects(self, resource: CustomResource, namespace: str, **kwargs: Any) -> Any:
        """The raw list call (label selectors, watch and `_preload_content` options pass through)."""
        return await self.custom.list_namespaced_custom_object(
            namespace=namespace, **resource.coordinates(), **kwargs
        )

    async def patch_object(
        self, resource: CustomResource, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Obj:
        """A JSON merge patch (metadata and spec). Raises 404/409 as ApiException."""
        patched = await self.custom.patch_namespaced_custom_object(
            namespace=namespace,
            name=name,
            body=dict(patch),
            _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # the client accepts it; its stubs omit it
            **resource.coordinates(),
        )
        return dict(patched)

    async def patch_object_status(
        self,
        resource: CustomResource,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> Obj | None:
        """A merge patch of the status subresource; None when the object is gone.

        With `resource_version`, only that version is patched (409 when it changed meanwhile).
        """
        body: Obj = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            patched = await self.custom.patch_namespaced_custom_object_status(
                namespace=namespace,
                name=name,
                body=body,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # the client accepts it; its stubs omit it
                **resource.coordinates(),
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        return dict(patched)

    async def delete_object(
        self, resource: CustomResource, namespace: str, name: str, *, resource_version: str | None = None
    ) -> Obj | None:
        """Start deleting the object (its children go by garbage collection); None when it is gone.

        With `resource_version`, only that version is deleted (409 when it changed meanwhile).
        """
        options: Obj = {"propagationPolicy": "Background"}
        if resource_version is not None:
            options["preconditions"] = {"resourceVersion": resource_version}
        try:
            result = await self.custom.delete_namespaced_custom_object(
                namespace=namespace,
                name=name,
                body=json_body(options, client.V1DeleteOptions),
                **resource.coordinates(),
            )
        except ApiException as exc:
            if exc.status == NOT_FOUND:
                return None
            raise
        return dict(result) if isinstance(result, Mapping) else None

    # ---- Sandboxes ------------------------------------------------------------------------------

    async def create_sandbox(self, namespace: str, body: Mapping[str, Any]) -> Obj:
        return await self.create_object(SANDBOXES, namespace, body)

    async def get_sandbox(self, namespace: str, name: str) -> Obj | None:
        """The Sandbox, or None when it does not exist."""
        return await self.get_object(SANDBOXES, namespace, name)

    async def list_sandboxes(self, namespace: str, **kwargs: Any) -> Any:
        """The raw list call (the gateway's reflector passes watch and `_preload_content` options)."""
        return await self.list_objects(SANDBOXES, namespace, **kwargs)

    async def patch_sandbox(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Obj:
        """A JSON merge patch of the Sandbox (metadata and spec). Raises 404/409 as ApiException."""
        return await self.patch_object(SANDBOXES, namespace, name, patch)

    async def patch_sandbox_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, resource_version: str | None = None
    ) -> Obj | None:
        """A merge patch of the status subresource; None when the Sandbox is gone (see `patch_object_status`)."""
        return await self.patch_object_status(SANDBOXES, namespace, name, status, resource_version=resource_version)

    async def delete_sandbox(
        self, namespace: str, name: str, *, resource_version: str | None = None
    ) -> Obj | None:
        """Start deleting the Sandbox (its children go by garbage collection); None when it is gone.

        With `resource_version`, only that version is deleted (409 when it changed meanwhile).
        """
        return await self.delete_object(SANDBOXES, namespace, name, resource_version=resource_version)
