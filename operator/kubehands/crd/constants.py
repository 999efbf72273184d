"""Every group, label, annotation and finalizer string of the Sandbox API.

No other module spells these literals; import them from here.
"""

GROUP = "kubehands.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Sandbox"
PLURAL = "sandboxes"
SINGULAR = "sandbox"
SHORT_NAMES = ("sbx",)  # not `sandbox`: agent-sandbox already uses it
CRD_NAME = f"{PLURAL}.{GROUP}"

# Warm pools (docs/design/0010-warm-pools.md).
POOL_KIND = "SandboxPool"
POOL_PLURAL = "sandboxpools"
POOL_SINGULAR = "sandboxpool"
POOL_SHORT_NAMES = ("sbxpool",)
POOL_CRD_NAME = f"{POOL_PLURAL}.{GROUP}"

# Labels the gateway sets on a Sandbox; the operator copies them to the children.
LABEL_OWNER = f"{GROUP}/owner"  # tenant of the API key that created the sandbox
LABEL_SESSION = f"{GROUP}/session"  # names.session_label(spec.sessionID)

# Labels the operator sets on children (Pod, PVC, adopted Secret).
LABEL_SANDBOX = f"{GROUP}/sandbox"  # names.label_value(sandbox name); the selector
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
PART_OF = "kubehands"
MANAGED_BY = "kubehands-operator"
COMPONENT_SANDBOX = "sandbox"  # the Pod
COMPONENT_WORKSPACE = "workspace"  # the PVC
COMPONENT_SESSION = "session"  # the session-key Secret

# On a pool member (a dormant Sandbox): its pool, and the hash of the pool template it was made from.
# A claim removes both, so a claimed sandbox is never counted, replaced or deleted by its former pool.
LABEL_POOL = f"{GROUP}/pool"
LABEL_POOL_TEMPLATE = f"{GROUP}/pool-template"
COMPONENT_POOL_INIT = "pool-init"  # a member's Secret: its throw-away session key, also its init key
# The environment variable that makes the agent server boot dormant.
ENV_DEFERRED_INIT = "OH_DEFERRED_INIT"

# Annotations.
ANNOTATION_SANDBOX_NAME = f"{GROUP}/sandbox-name"  # raw owner name on every child
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"  # on the Pod: hash of the pod-relevant spec
# On a Sandbox: who paused it. The idle culler writes PAUSED_BY_IDLE_CULLER; the gateway may
# write anything else (e.g. "gateway"). Only read while spec.state is Paused.
ANNOTATION_PAUSED_BY = f"{GROUP}/paused-by"
PAUSED_BY_IDLE_CULLER = "idle-culler"
# On a Sandbox: when a client last asked for a fresh start (RFC 3339). The gateway sets it to restart a
# session in error in place; it is part of the pod's spec hash, so the pod is replaced and the PVC kept,
# and the start deadline counts from it.
ANNOTATION_RESTARTED_AT = f"{GROUP}/restarted-at"
# On a Sandbox: hex sha256 of its session API key, written by the gateway with the key (at /start, and
# on /resume when the key rotates). The router checks a presented key against it, so it needs no Secrets.
ANNOTATION_SESSION_KEY_SHA256 = f"{GROUP}/session-key-sha256"
# On a claimed Sandbox: the uid of the dormant pod the claim took over. The operator keeps that pod
# although the claim replaced the spec (it re-stamps the pod's spec hash); any later pod starts cold.
ANNOTATION_CLAIMED_POD = f"{GROUP}/claimed-pod"
# On a claimed Sandbox: "ready" once the gateway's POST /api/init succeeded. Until then it is `starting`.
ANNOTATION_INIT = f"{GROUP}/init"
INIT_READY = "ready"
# On a claimed Sandbox: the pool it came from (for metrics and `kubectl`), never read for decisions.
ANNOTATION_CLAIMED_FROM = f"{GROUP}/claimed-from"
# On a claimed Sandbox, written by the gateway with the claim: when it claimed (RFC 3339), and the claimed
# pod's status.restartCount then. Any gateway replica restarts the sandbox cold when its init is not done long
# after the claim (the claiming replica died), or when the claimed pod's container restarted since (it boots
# dormant again). The operator reads only the claim time: the claimed Sandbox's maxLifetimeSeconds counts from it.
ANNOTATION_CLAIMED_AT = f"{GROUP}/claimed-at"
ANNOTATION_CLAIMED_RESTARTS = f"{GROUP}/claimed-restarts"

# kopf bookkeeping (progress, diff base) lives under this annotation prefix.
KOPF_PREFIX = f"kopf.{GROUP}"
# Declared for kopf's settings; the operator registers no blocking delete handler, so kopf
# never actually adds it (children are removed by owner-reference garbage collection).
FINALIZER = f"{GROUP}/finalizer"

# Secret key that holds the session API key unless spec.sessionKeySecretRef.key says otherwise.
DEFAULT_SESSION_KEY_SECRET_KEY = "session-api-key"

# Ports the OpenHands clients expect (docs/runtime-api.md §7).
AGENT_PORT_NAME = "agent"
AGENT_PORT = 60000
VSCODE_PORT_NAME = "vscode"
VSCODE_PORT = 60001
WORK_1_PORT_NAME = "work-1"
WORK_1_PORT = 12000
WORK_2_PORT_NAME = "work-2"
WORK_2_PORT = 12001
DEFAULT_PORTS = (
    (AGENT_PORT_NAME, AGENT_PORT),
    (VSCODE_PORT_NAME, VSCODE_PORT),
    (WORK_1_PORT_NAME, WORK_1_PORT),
    (WORK_2_PORT_NAME, WORK_2_PORT),
)

# Environment the operator sets in every sandbox container. A Sandbox's spec.env cannot override it,
# and the gateway drops these names from what a /start request or a key profile asks for.
ENV_SESSION_KEYS = ("OH_SESSION_API_KEYS_0", "SESSION_API_KEY")  # agent server ≥1.37.1 and V0 servers
# The agent server's secret key, from the same Secret entry as the session keys: the server defaults it to the
# first session key anyway, and a pool member's init key (which must equal it) never appears in the pod spec.
ENV_SECRET_KEY = "OH_SECRET_KEY"
ENV_RUNTIME_ID = "RUNTIME_ID"
ENV_PORTS = {  # env var -> spec.ports name
    "VSCODE_PORT": VSCODE_PORT_NAME,
    "OH_VSCODE_PORT": VSCODE_PORT_NAME,
    "WORKER_1": WORK_1_PORT_NAME,
    "WORKER_2": WORK_2_PORT_NAME,
}
ENV_FIXED = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no cost-map download at every start
MANAGED_ENV = frozenset((*ENV_SESSION_KEYS, ENV_SECRET_KEY, ENV_RUNTIME_ID, *ENV_PORTS, *ENV_FIXED))

DEFAULT_WORKSPACE_SIZE = "10Gi"
DEFAULT_WORKSPACE_MOUNT_PATH = "/workspace"
WORKSPACE_VOLUME_NAME = "workspace"  # the pod volume; spec.volumes may not reuse it
SANDBOX_CONTAINER_NAME = "sandbox"  # the pod's one container (the gateway and `kubehands sandboxes logs` read its log)
