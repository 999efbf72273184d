"""Wake on request: a request that carries a paused sandbox's session key resumes it, and waits until its agent
server answers (`middleware.py` decides when; this makes the calls).

Only the data plane wakes sandboxes; the control API resumes them through /resume and /start. A wake is admitted
like a /resume (`admission`: 429 at the owner's running limit, 403 when the owner's key was revoked), and with
`KUBEHANDS_ROTATE_SESSION_KEY_ON_RESUME` it rotates the session key as /resume does. The waking request then carries
a key that is no longer the sandbox's: it is answered 401 (`SessionKeyRotated`) without waiting, and the client
reads the new key from the control API (docs/gateway.md, "Router").
"""

from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from kubehands.api import limits
from kubehands.api.admission import REVOKED, Admissions, revoked_detail
from kubehands.api.errors import Forbidden, SandboxConflict, Unauthorized
from kubehands.api.observe.alive import AliveTracker
from kubehands.api.observe.caches import Caches
from kubehands.api.session_claims import SessionClaims
from kubehands.api.settings import Settings
from kubehands.crd.constants import ANNOTATION_SESSION_KEY_SHA256, LABEL_OWNER
from kubehands.crd.model import DesiredState
from kubehands.kube import NOT_FOUND, Kube, labels
from kubehands.spec import objects
from kubehands.spec.constants import ANNOTATION_MAX_RUNNING

Obj = dict[str, Any]


class SessionKeyRotated(Unauthorized):
    """The wake rotated the session key: the key the waking request carries is no longer valid."""


def rotated_detail(runtime_id: str) -> str:
    return (
        f"sandbox {runtime_id} was resumed with a new session key (KUBEHANDS_ROTATE_SESSION_KEY_ON_RESUME); the key "
        f"this request carries is no longer valid: read the new one from GET /runtime/{runtime_id}"
    )


class Waker:
    def __init__(
        self, settings: Settings, caches: Caches, kube: Kube, alive: AliveTracker, admissions: Admissions
    ) -> None:
        self.settings = settings
        self.caches = caches
        self.alive = alive
        self.admissions = admissions
        self._claims = SessionClaims(settings, caches, kube)
        self._kube = kube

    async def wake(self, runtime_id: str, timeout: float) -> Obj | None:
        """Resume a paused sandbox and wait until its agent server answers; None on timeout.

        The router calls it only for requests that carry the sandbox's session key. `LimitExceeded` when
        resuming would put the owner over its running limit, `Forbidden` when the owner's key was revoked,
        `SessionKeyRotated` when the wake rotated the key; Kubernetes errors propagate (the router maps them).
        """
        loop_deadline = datetime.now(UTC).timestamp() + timeout
        sandbox = self.caches.sandbox(runtime_id)
        if sandbox is not None and (sandbox.get("spec") or {}).get("state") == DesiredState.PAUSED:
            if await self._resume(sandbox) is None:
                return None
            if self.settings.rotate_session_key_on_resume:
                raise SessionKeyRotated(rotated_detail(runtime_id))
        while True:
            sandbox = self.caches.sandbox(runtime_id)
            if sandbox is None or sandbox["metadata"].get("deletionTimestamp"):
                return None
            if self.alive.is_alive(sandbox):
                return sandbox
            remaining = loop_deadline - datetime.now(UTC).timestamp()
            if remaining <= 0:
                return None
            await self.caches.sandboxes.wait_changed(min(remaining, 5.0))

    async def _resume(self, sandbox: Obj) -> Obj | None:
        """Admit and resume the paused sandbox, as /resume does; None when it is gone."""
        runtime_id = sandbox["metadata"]["name"]
        rotate = self.settings.rotate_session_key_on_resume
        if rotate and not self.caches.secrets:
            raise SandboxConflict(
                f"sandbox {runtime_id} is paused, and resuming it rotates its session key, which this router (it "
                "reads no Secrets) cannot do: POST /resume to the control API"
            )
        tenant = labels(sandbox).get(LABEL_OWNER, "")
        limit = limits.limit_of(self.caches, self.settings, sandbox)
        admission = await self.admissions.admit(tenant, limits.slot_of(sandbox), limit)
        try:
            annotations = {ANNOTATION_MAX_RUNNING: str(limit)}
            if rotate:  # the Secret first, the digest with the state: as /resume
                annotations[ANNOTATION_SESSION_KEY_SHA256] = objects.session_key_digest(
                    await self._claims.rotate_key(sandbox)
                )
            patch = {"metadata": {"annotations": annotations}, "spec": {"state": DesiredState.RUNNING.value}}
            resumed = await self._kube.patch_sandbox(self.settings.namespace, runtime_id, patch)
        except ApiException as exc:
            if exc.status < 500:
                await self.admissions.release(admission)
            if exc.status == NOT_FOUND:
                return None
            raise
        self.caches.sandboxes.upsert(resumed)
        # Revoked while this wake was on its way (after the revocation paused the key's sandboxes): pause it again.
        # A wake is rare and waits for a pod anyway, so this one more GET is cheap.
        data, _ = await self.admissions.ledgers.read(tenant)
        if REVOKED in data:
            pause = {"spec": {"state": DesiredState.PAUSED.value}}
            self.caches.sandboxes.upsert(await self._kube.patch_sandbox(self.settings.namespace, runtime_id, pause))
            raise Forbidden(revoked_detail(tenant))
        return resumed
