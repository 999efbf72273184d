"""The Pod Security Standards' `baseline` and `restricted` profiles as Kubernetes documents them (concepts/security/
pod-security-standards, "latest" as of v1.30+), checked on a pod spec: `violations(pod_spec, "restricted")` lists
every control the spec breaks, in the words of the control. The local cluster (v1.20) has no Pod Security
Admission, so this check is what proves that the pods kubehands builds comply with the label the chart sets.
"""

from collections.abc import Iterator, Mapping
from typing import Any

Obj = Mapping[str, Any]

# Baseline "Capabilities": what a container may add (restricted: NET_BIND_SERVICE only).
BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
     "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)  # fmt: skip
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Baseline "Sysctls": the safe set.
SAFE_SYSCTLS = frozenset(
    {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
     "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
     "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
     "net.ipv4.tcp_keepalive_probes"}
)  # fmt: skip
# Baseline "SELinux": the types a pod may ask for.
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
# Restricted "Volume Types": the only sources a volume may have.
RESTRICTED_VOLUME_SOURCES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
LEVELS = ("privileged", "baseline", "restricted")


def _containers(spec: Obj) -> Iterator[tuple[str, Obj]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            yield f"{field}[{container.get('name')}]", container


def _baseline(spec: Obj, annotations: Obj) -> Iterator[str]:
    pod_security = spec.get("securityContext") or {}
    if (pod_security.get("windowsOptions") or {}).get("hostProcess"):
        yield "HostProcess: spec.securityContext.windowsOptions.hostProcess"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            yield f"Host Namespaces: spec.{field}"
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            yield f"HostPath Volumes: volume {volume.get('name')}"
    for sysctl in pod_security.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"Sysctls: {sysctl.get('name')}"
    contexts = [("spec.securityContext", pod_security)]
    for where, container in _containers(spec):
        security = container.get("securityContext") or {}
        contexts.append((f"{where}.securityContext", security))
        if (security.get("windowsOptions") or {}).get("hostProcess"):
            yield f"HostProcess: {where}"
        if security.get("privileged"):
            yield f"Privileged Containers: {where}"
        for added in (security.get("capabilities") or {}).get("add") or []:
            if added not in BASELINE_CAPABILITIES:
                yield f"Capabilities: {where} adds {added}"
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                yield f"Host Ports: {where} port {port.get('containerPort')}"
        if security.get("procMount") not in (None, "Default"):
            yield f"/proc Mount Type: {where}"
    for where, security in contexts:
        if (security.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            yield f"AppArmor: {where}.appArmorProfile"
        selinux = security.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            yield f"SELinux: {where}.seLinuxOptions"
        if (security.get("seccompProfile") or {}).get("type") == "Unconfined":
            yield f"Seccomp: {where}.seccompProfile is Unconfined"
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            yield f"AppArmor: annotation {key}"


def _restricted(spec: Obj) -> Iterator[str]:
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= RESTRICTED_VOLUME_SOURCES:
            yield f"Volume Types: volume {volume.get('name')} uses {sorted(sources - RESTRICTED_VOLUME_SOURCES)}"
    pod_security = spec.get("securityContext") or {}
    if pod_security.get("runAsNonRoot") is False:
        yield "Running as Non-root: spec.securityContext.runAsNonRoot is false"
    if pod_security.get("runAsUser") == 0:
        yield "Running as Non-root user: spec.securityContext.runAsUser is 0"
    pod_seccomp = (pod_security.get("seccompProfile") or {}).get("type")
    for where, container in _containers(spec):
        security = container.get("securityContext") or {}
        if security.get("allowPrivilegeEscalation") is not False:
            yield f"Privilege Escalation: {where}.securityContext.allowPrivilegeEscalation is not false"
        non_root = security.get("runAsNonRoot")
        if non_root is False or (non_root is None and pod_security.get("runAsNonRoot") is not True):
            yield f"Running as Non-root: {where} is not required to run as non-root"
        if security.get("runAsUser") == 0:
            yield f"Running as Non-root user: {where}.securityContext.runAsUser is 0"
        seccomp = (security.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield f"Seccomp: {where} has no RuntimeDefault or Localhost seccomp profile"
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"Capabilities: {where} does not drop ALL"
        for added in capabilities.get("add") or []:
            if added not in RESTRICTED_CAPABILITIES:
                yield f"Capabilities: {where} adds {added}"


def violations(pod: Obj, level: str = "restricted") -> list[str]:
    """Every control of `level` that `pod` (a Pod, or a pod template: {metadata, spec}) breaks."""
    assert level in LEVELS, level
    if level == "privileged":
        return []
    spec = pod.get("spec") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    found = list(_baseline(spec, annotations))
    if level == "restricted":
        found += _restricted(spec)
    return found
