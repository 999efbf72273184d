#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 on this machine: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy and the pods' resolver (dnsmasq).
#
#   hack/cluster.sh up       start it (idempotent), wait for the node to be Ready, print KUBECONFIG=, KUBECTL=;
#                            a cluster stopped before comes back with its state (objects, keys, workspaces)
#   hack/cluster.sh stop     stop every process it started (by PID) and undo its host changes, keeping its state
#   hack/cluster.sh down     stop it and delete its state: every Sandbox, workspace and API key (make cluster-reset)
#   hack/cluster.sh status   exit 0 when it is running (and print the same lines as up)
#   hack/cluster.sh egress   apply the sandbox egress settings in the environment to the running cluster
#                            (hack/lib/egress.sh: KUBEHANDS_SANDBOX_EGRESS and friends); print them
#
# Knobs (environment): KUBEHANDS_CACHE (default ~/.cache/kubehands; binaries, images, containerd
# content), KUBEHANDS_STATE (default $KUBEHANDS_CACHE/cluster; certs, etcd, workspaces, logs; stop keeps it,
# down removes it), the egress settings of hack/lib/egress.sh (default: none).
set -o errexit -o nounset -o pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
source "$ROOT/hack/lib/pki.sh"
source "$ROOT/hack/lib/images.sh"

NODE_NAME=localhost          # the API server reaches the kubelet through this name (127.0.0.1)
BRIDGE=cni0
BRIDGE_IP=10.88.0.1          # the API server binds here so pods reach it via the kubernetes Service
POD_CIDR=10.88.0.0/24
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1
APISERVER_PORT=16443
ETCD_PORT=23790
SANDBOX_UID=10001            # the host-path provisioner runs as this uid, so its volumes are writable by sandboxes
# Kubernetes 1.20's host-path provisioner always makes its volumes under this path: a bind mount of $VOLUMES
# while the cluster runs, so workspaces outlive a stop and /tmp holds nothing once it is stopped.
HOSTPATH_PV=/tmp/hostpath_pv

S="$KUBEHANDS_STATE"
PKI="$S/pki"
LOGS="$S/logs"
PIDS="$S/pids"
HOST="$S/host"               # what the host looked like before we changed it
KUBECONFIG_ADMIN="$S/kubeconfig"
VOLUMES="$S/volumes"
# kube-controller-manager runs as the sandbox uid, which cannot traverse a home folder: its
# copies of the kubeconfig and keys live in a private folder under /tmp instead.
KCM_DIR="/tmp/kubehands-kcm-$(echo "$S" | sha256sum | cut -c1-8)"
CONTAINERD_ROOT="$KUBEHANDS_CACHE/containerd/root"   # kept across runs: imported images survive
CONTAINERD_SOCK="$S/containerd.sock"
# Start order; down stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy dnsmasq)
# sysctls kubelet, kube-proxy and the CNI bridge plugin change.
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory net.ipv4.conf.all.route_localnet
         net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
# System paths kubelet, containerd and CNI write to whatever their configured roots are.
SYSTEM_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns
              /etc/kubernetes /usr/libexec/kubernetes)
source "$ROOT/hack/lib/egress.sh"

# ---------------------------------------------------------------- processes

kh::pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
kh::alive() {  # alive COMPONENT: its recorded PID runs the binary we started
  local pid; pid=$(kh::pid_of "$1")
  [[ -n $pid && -d /proc/$pid ]] && [[ "$(tr '\0' ' ' < "/proc/$pid/cmdline")" == *"$1"* ]]
}

# kh::start COMPONENT [env K=V ...] -- COMMAND... : run in its own session, log to a file, record the PID.
kh::start() {
  local name=$1; shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
  kh::log "starting $name (log: $LOGS/$name.log)"
  kh::private_file "$LOGS/$name.log"   # logs name hosts, paths and objects: the owner's only, as make run's
  env "${envs[@]}" setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}

kh::stop() {
  local name=$1 pid
  pid=$(kh::pid_of "$name")
  [[ -n $pid ]] || return 0
  if kh::alive "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while [[ -d /proc/$pid ]] && (( SECONDS < deadline )); do sleep 0.2; done
    [[ -d /proc/$pid ]] && { kh::log "$name did not stop on TERM; killing"; kill -KILL "$pid" 2>/dev/null || true; }
    while [[ -d /proc/$pid ]]; do sleep 0.1; done
  fi
  rm -f "$PIDS/$name.pid"
}

kh::require_alive() {  # fail fast, naming the log, when a component died during start
  kh::alive "$1" || { tail -25 "$LOGS/$1.log" >&2; kh::die "$1 exited; see $LOGS/$1.log"; }
}

# ---------------------------------------------------------------- host snapshot and restore

kh::record_host() {
  mkdir -p "$HOST"
  local k
  for k in "${SYSCTLS[@]}"; do
    v=$(sysctl -n "$k" 2>/dev/null) && echo "$k=$v" >> "$HOST/sysctl"
  done
  for p in "${SYSTEM_PATHS[@]}"; do [[ -e $p ]] && echo "$p" >> "$HOST/existing-paths"; done
  touch "$HOST/existing-paths"
  ls /run/netns 2>/dev/null > "$HOST/netns" || true
}

kh::restore_sysctls() {
  [[ -f $HOST/sysctl ]] || return 0
  local line k v now
  while IFS= read -r line; do
    k=${line%%=*}; v=${line#*=}
    now=$(sysctl -n "$k" 2>/dev/null) || continue
    [[ $now == "$v" ]] || { sysctl -q -w "$k=$v" >/dev/null && kh::log "restored $k=$v (was $now)"; }
  done < "$HOST/sysctl"
}

# Remove every iptables chain named KUBE-*, CNI-* or KUBEHANDS-* and every rule that jumps to one.
kh::clean_iptables() {
  local cmd table chain rule
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat mangle raw; do
      "$cmd-save" -t "$table" >/dev/null 2>&1 || continue
      # Jumps from built-in (or foreign) chains first, then flush, then delete our chains.
      while IFS= read -r rule; do
        eval "$cmd -t $table -D ${rule#-A }" 2>/dev/null || true
      done < <("$cmd-save" -t "$table" | grep -E '^-A ' | grep -E -- '-j (KUBE|CNI|KUBEHANDS)-' | grep -vE '^-A (KUBE|CNI|KUBEHANDS)-' || true)
      for chain in $("$cmd-save" -t "$table" | sed -n 's/^:\(\(KUBE\|CNI\|KUBEHANDS\)-[^ ]*\) .*/\1/p'); do
        "$cmd" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd-save" -t "$table" | sed -n 's/^:\(\(KUBE\|CNI\|KUBEHANDS\)-[^ ]*\) .*/\1/p'); do
        "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

kh::unmount_under() {  # unmount everything below a path, deepest first
  local base=$1 m
  for m in $(awk -v b="$base" '$2 == b || index($2, b "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

kh::remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# Containers and pod sandboxes left in containerd (kubelet is already stopped): kill and remove
# them so no shim, netns or mount outlives the cluster and the next start begins empty.
kh::remove_containers() {
  [[ -S $CONTAINERD_SOCK ]] && kh::alive containerd || return 0
  local c
  for c in $(kh::images::ctr tasks ls -q 2>/dev/null); do kh::images::ctr tasks kill -s KILL "$c" >/dev/null 2>&1 || true; done
  local deadline=$((SECONDS + 20))
  while [[ -n "$(kh::images::ctr tasks ls -q 2>/dev/null | head -1)" ]] && (( SECONDS < deadline )); do
    for c in $(kh::images::ctr tasks ls -q 2>/dev/null); do kh::images::ctr tasks rm -f "$c" >/dev/null 2>&1 || true; done
    sleep 0.2
  done
  for c in $(kh::images::ctr containers ls -q 2>/dev/null); do kh::images::ctr containers rm "$c" >/dev/null 2>&1 || true; done
}

# ---------------------------------------------------------------- configuration files

kh::write_configs() {
  mkdir -p "$S/cni/net.d" "$S/cni/ipam" "$S/kubelet" "$S/containerd" "$CONTAINERD_ROOT"
  rm -rf "$KCM_DIR"; mkdir -p -m 0700 "$KCM_DIR/flex"
  cat > "$S/cni/net.d/10-kubehands.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "kubehands",
  "plugins": [
    {"type": "bridge", "bridge": "${BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "${POD_CIDR}", "gateway": "${BRIDGE_IP}"}]],
              "routes": [{"dst": "${SERVICE_CIDR}"}, {"dst": "0.0.0.0/0"}], "dataDir": "$S/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  cat > "$S/containerd/config.toml" <<TOML
version = 2
root = "${CONTAINERD_ROOT}"
state = "$S/containerd/state"
[grpc]
  address = "${CONTAINERD_SOCK}"
[plugins."io.containerd.internal.v1.opt"]
  path = "$S/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  # This VM lacks CAP_SYS_RESOURCE: negative oom_score_adj (kubelet asks -998) would fail every pod.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$S/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$S/cni/net.d"
TOML
  # The pods' resolver is dnsmasq on the bridge; hack/lib/egress.sh decides what it forwards to (by default nothing).
  echo "nameserver ${BRIDGE_IP}" > "$S/kubelet/resolv.conf"
  cat > "$S/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
# Loopback only, for a development cluster: the API server is the kubelet's only client.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
resolvConf: "$S/kubelet/resolv.conf"
clusterDomain: cluster.local
maxPods: 250
serializeImagePulls: false
# Locally imported images cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "200Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
syncFrequency: 10s
nodeStatusUpdateFrequency: 4s
YAML
  for c in admin controller-manager scheduler kubelet kube-proxy; do kh::pki::kubeconfig "$c" "$S/$c.kubeconfig"; done
  cp "$S/admin.kubeconfig" "$KUBECONFIG_ADMIN"
  # kube-controller-manager runs as the sandbox uid: give it its own readable copies.
  cp "$S/controller-manager.kubeconfig" "$PKI/ca.crt" "$PKI/ca.key" "$PKI/sa.key" "$KCM_DIR/"
  chown -R "$SANDBOX_UID:$SANDBOX_UID" "$KCM_DIR"
}

# ---------------------------------------------------------------- start

kh::bridge_up() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show dev "$BRIDGE" | grep -q "inet ${BRIDGE_IP}/" || ip addr add "${BRIDGE_IP}/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Host traffic to service IPs stays on the bridge even when no kube-proxy rule matches.
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE"
}

kh::apiserver_ready() {
  curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://${BRIDGE_IP}:${APISERVER_PORT}/readyz" >/dev/null
}
kh::node_ready() {
  "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" --cache-dir "$S/kubectl-cache" get node "$NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

kh::kept() { [[ -f $S/initialized ]]; }   # a cluster that once came up: its state is worth keeping

# Workspaces live in $VOLUMES; the provisioner (uid $SANDBOX_UID) sees them at $HOSTPATH_PV.
kh::volumes_up() {
  mkdir -p "$VOLUMES" "$HOSTPATH_PV"
  chown "$SANDBOX_UID:$SANDBOX_UID" "$VOLUMES"
  mountpoint -q "$HOSTPATH_PV" || mount --bind "$VOLUMES" "$HOSTPATH_PV"
}

kh::volumes_down() {
  if mountpoint -q "$HOSTPATH_PV"; then
    umount "$HOSTPATH_PV" 2>/dev/null || umount -l "$HOSTPATH_PV"
    rmdir "$HOSTPATH_PV"
  elif [[ -d $HOSTPATH_PV ]] && ! grep -qx "$HOSTPATH_PV" "$HOST/existing-paths" 2>/dev/null; then
    rm -rf "$HOSTPATH_PV"   # volumes of a cluster started before they were kept in $VOLUMES
  fi
}

# Pod network namespaces are mounts under /run/netns. `ip netns add` (a user's, or the tests' stand-in internet)
# makes that folder a mount point of its own when it is not one, by a recursive bind that copies the mounts there:
# the pods' originals would stay hidden beneath it, never unmounted. Making it one first (as `ip` does) avoids that;
# the stop undoes it when nothing else is mounted there.
kh::netns_dir_up() {
  mkdir -p /run/netns
  mountpoint -q /run/netns && return 0
  mount --bind /run/netns /run/netns
  mount --make-shared /run/netns
  touch "$HOST/netns-mount"
}

kh::netns_dir_down() {
  [[ -f $HOST/netns-mount ]] && mountpoint -q /run/netns || return 0
  awk '$2 ~ "^/run/netns/" {found=1} END {exit !found}' /proc/self/mounts && return 0   # someone else's netns
  umount /run/netns 2>/dev/null || umount -l /run/netns
}

kh::running() {
  local c
  for c in "${COMPONENTS[@]}"; do kh::alive "$c" || return 1; done
  kh::apiserver_ready
}

kh::up() {
  if kh::running; then
    kh::log "cluster already running"
    kh::print_env
    return 0
  fi
  if kh::kept; then
    kh::log "restarting the cluster stopped before, with its state ($S)"
    kh::halt   # whatever a crash left running or changed
  elif [[ -d $S ]]; then
    kh::log "cleaning up a previous, incomplete cluster"
    kh::down
  fi
  bash "$ROOT/hack/install-deps.sh"
  bash "$ROOT/hack/build-kubernetes.sh"
  local t0=$SECONDS
  mkdir -p "$S" "$PIDS"
  kh::private_dir "$LOGS"   # 0700, a folder of an earlier run too
  kh::record_host
  # Any failure from here on (errexit or kh::die) undoes what was started; the state of a cluster that has run
  # before is kept.
  trap 'kh::log "start failed; tearing down"; if kh::kept; then kh::halt; else kh::down; fi' EXIT
  [[ -f $PKI/ca.crt ]] || kh::pki::init
  kh::write_configs
  kh::bridge_up
  kh::volumes_up
  kh::netns_dir_up

  kh::start etcd -- etcd --name kubehands --data-dir "$S/etcd" \
    --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster kubehands=http://127.0.0.1:23800 --listen-metrics-urls http://127.0.0.1:23810
  kh::start containerd -- containerd --config "$S/containerd/config.toml"
  kh::start kube-apiserver -- "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:${ETCD_PORT}" \
    --bind-address "$BRIDGE_IP" --advertise-address "$BRIDGE_IP" --secure-port "$APISERVER_PORT" --insecure-port 0 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC --allow-privileged=true \
    --enable-admission-plugins NodeRestriction --profiling=false --event-ttl 1h
  kh::wait_for "kube-apiserver /readyz" 60 kh::apiserver_ready || kh::require_alive kube-apiserver
  kh::require_alive etcd

  kh::start kube-controller-manager -- setpriv --reuid "$SANDBOX_UID" --regid "$SANDBOX_UID" --clear-groups \
    "$K8S_BIN/kube-controller-manager" --kubeconfig "$KCM_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --port 0 --secure-port 10257 --leader-elect=false \
    --use-service-account-credentials=true --service-account-private-key-file "$KCM_DIR/sa.key" \
    --root-ca-file "$KCM_DIR/ca.crt" --cluster-signing-cert-file "$KCM_DIR/ca.crt" --cluster-signing-key-file "$KCM_DIR/ca.key" \
    --enable-hostpath-provisioner --flex-volume-plugin-dir "$KCM_DIR/flex" --controllers '*'
  kh::start kube-scheduler -- "$K8S_BIN/kube-scheduler" --kubeconfig "$S/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --port 0 --secure-port 10259 --leader-elect=false
  kh::wait_for "containerd socket" 30 test -S "$CONTAINERD_SOCK" || kh::require_alive containerd
  kh::remove_containers   # anything a crashed earlier run left in the persistent root
  kh::images::build_pause
  kh::images::import_all

  # AWS_EC2_METADATA_DISABLED: kubelet 1.20's in-tree ECR provider would probe the metadata address.
  kh::start kubelet AWS_EC2_METADATA_DISABLED=true -- "$K8S_BIN/kubelet" --config "$S/kubelet/config.yaml" \
    --kubeconfig "$S/kubelet.kubeconfig" --container-runtime remote \
    --container-runtime-endpoint "unix://${CONTAINERD_SOCK}" --runtime-request-timeout 15m \
    --root-dir "$S/kubelet/root" --cert-dir "$S/kubelet/pki" --volume-plugin-dir "$S/kubelet/volume-plugins" \
    --hostname-override "$NODE_NAME" --node-ip "$BRIDGE_IP" --pod-infra-container-image "$PAUSE_IMAGE"
  kh::start kube-proxy -- "$K8S_BIN/kube-proxy" --kubeconfig "$S/kube-proxy.kubeconfig" --proxy-mode iptables \
    --hostname-override "$NODE_NAME" --bind-address "$BRIDGE_IP" --cluster-cidr "$POD_CIDR" \
    --nodeport-addresses "127.0.0.0/8,${POD_CIDR}" --healthz-bind-address 127.0.0.1:10256 \
    --metrics-bind-address 127.0.0.1:10249 --conntrack-max-per-core 0 \
    --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0
  kh::wait_for "node $NODE_NAME Ready" 90 kh::node_ready || { kh::require_alive kubelet; kh::die "node not Ready"; }
  kh::egress::apply
  for c in "${COMPONENTS[@]}"; do kh::require_alive "$c"; done
  kh::apply_storage_class
  touch "$S/initialized"
  trap - EXIT
  kh::log "cluster ready in $((SECONDS - t0)) s; logs in $LOGS"
  kh::print_env
}

kh::apply_storage_class() {
  "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" --cache-dir "$S/kubectl-cache" apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
}

# ---------------------------------------------------------------- stop

# kh::halt: stop every process and undo every host change, keeping the cluster's state: certificates, etcd (every
# object, API keys included), workspaces ($VOLUMES), logs and make run's files. Pods come back when it restarts.
kh::halt() {
  trap - EXIT
  [[ -d $S ]] || { kh::log "no cluster state at $S"; return 0; }
  kh::log "stopping the cluster"
  kh::stop kube-proxy
  kh::stop kubelet
  kh::remove_containers
  kh::stop containerd
  kh::stop kube-scheduler
  kh::stop kube-controller-manager
  kh::stop kube-apiserver
  kh::stop etcd
  # kube-proxy's own cleanup, then anything either of them left (their chains, the jumps to them), and ours.
  [[ -x $K8S_BIN/kube-proxy ]] && kh::private_file "$LOGS/kube-proxy-cleanup.log" \
    && "$K8S_BIN/kube-proxy" --cleanup > "$LOGS/kube-proxy-cleanup.log" 2>&1 || true
  kh::egress::remove
  kh::clean_iptables
  kh::restore_sysctls
  kh::unmount_under "$S/kubelet"
  kh::unmount_under "$S/containerd"
  kh::unmount_under "$CONTAINERD_ROOT"
  kh::volumes_down
  kh::unmount_under "$S"
  # Pod network namespaces that CNI made and nobody deleted (their veths go with them).
  local ns
  for ns in $(ls /run/netns 2>/dev/null); do
    grep -qx "$ns" "$HOST/netns" 2>/dev/null || { umount "/run/netns/$ns" 2>/dev/null || true; rm -f "/run/netns/$ns"; }
  done
  kh::netns_dir_down
  kh::remove_cgroups
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  ip route del "$SERVICE_CIDR" 2>/dev/null || true
  local p
  for p in "${SYSTEM_PATHS[@]}"; do
    [[ -e $p ]] && ! grep -qx "$p" "$HOST/existing-paths" 2>/dev/null && { kh::unmount_under "$p"; rm -rf "$p"; }
  done
  # What only lived while it ran: pod sandboxes' files, IP leases of containers that are gone, the host snapshot
  # (taken again at the next start).
  rm -rf "$PIDS" "$S/kubelet/root" "$S/cni/ipam" "$S/containerd/state" "$S/containerd/opt" "$S/runc" "$HOST" "$KCM_DIR"
  kh::log "cluster stopped; host restored"
}

# kh::down: halt, then delete the state. Nothing of the cluster is left.
kh::down() {
  kh::halt
  [[ -d $S ]] || return 0
  if kh::kept; then
    kh::log "deleting the cluster's state ($S): every Sandbox and its workspace, every API key, the logs"
  fi
  mountpoint -q "$HOSTPATH_PV" && kh::die "$HOSTPATH_PV is still mounted: not deleting $S"
  rm -rf "$S"
  kh::log "cluster deleted"
}

kh::stop_keeping_state() {
  kh::halt
  kh::kept && kh::log "state kept in $S: the next 'hack/cluster.sh up' (or make run) brings back its sandboxes," \
    "workspaces and API keys; 'make cluster-reset' deletes them"
  return 0
}

kh::egress_command() {
  kh::running || kh::die "the cluster is not running (hack/cluster.sh up)"
  kh::egress::apply
  kh::egress::settings
}

kh::print_env() {
  echo "KUBECONFIG=$KUBECONFIG_ADMIN"
  echo "SANDBOX_IMAGE=$AGENT_SERVER_IMAGE"
  echo "APP_SANDBOX_IMAGE=$APP_AGENT_SERVER_IMAGE"
  echo "KUBECTL=$KUBECTL"   # the same version as the cluster: $KUBECTL --kubeconfig $KUBECONFIG get nodes
}

kh::status() {
  if kh::running; then echo "running"; kh::print_env; else echo "not running"; return 1; fi
}

case ${1:-} in
  up) kh::up ;;
  stop) kh::stop_keeping_state ;;
  down) kh::down ;;
  status) kh::status ;;
  egress) kh::egress_command ;;
  *) echo "usage: $0 up|stop|down|status|egress" >&2; exit 2 ;;
esac
