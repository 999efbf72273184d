# Sandbox egress on the local cluster (docs/development.md#sandbox-egress-on-the-local-cluster). Sourced by
# hack/cluster.sh, which defines BRIDGE, BRIDGE_IP, POD_CIDR, APISERVER_PORT, S, kh::start and kh::stop.
#
# The local cluster enforces no NetworkPolicy, so the host's firewall does what the chart's NetworkPolicy does
# on a real cluster. Pods always get a default route to the bridge and a resolver on it (dnsmasq, a cluster
# component); what may pass is decided here, in iptables chains of our own that teardown removes:
#   KUBEHANDS-EGRESS  (filter, from FORWARD)      pods -> anything beyond the bridge
#   KUBEHANDS-HOST    (filter, from INPUT)        pods -> the host itself (10.88.0.1 and its other addresses)
#   KUBEHANDS-MASQ    (nat, from POSTROUTING)     source NAT for what EGRESS lets out
#
# Settings (environment, read by `hack/cluster.sh up` and `hack/cluster.sh egress`):
#   KUBEHANDS_SANDBOX_EGRESS   none (default here: tests, CI, benchmarks) | internet (make run's default: every
#                              public address) | host (internet, and every port of the host) | CIDR[,CIDR...]
#                              (only these networks)
#   KUBEHANDS_SANDBOX_EGRESS_ALLOW  CIDRs pods may reach even inside the blocked ranges (e.g. an LLM on the LAN)
#   KUBEHANDS_SANDBOX_HOST_PORTS    TCP ports of the host pods may reach in any mode (e.g. 11434, a local Ollama)
#   KUBEHANDS_SANDBOX_DNS      the DNS servers the pods' resolver asks; default: the host's (/etc/resolv.conf)
#                              for internet and host, none otherwise, so a name never leaves the machine
#                              unless the mode lets traffic leave too
# Whatever the mode, the blocked ranges (below; the chart's networkPolicy.blockedCIDRs) stay unreachable unless
# listed in KUBEHANDS_SANDBOX_EGRESS_ALLOW, and so does every host port but DNS, the API server and the ones
# named above.

# RFC 1918, shared address space (RFC 6598: Alibaba Cloud's metadata), link-local (every cloud's metadata
# service), Azure's wireserver, "this network" and multicast/reserved.
EGRESS_BLOCKED=(10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10 169.254.0.0/16 168.63.129.16/32
                0.0.0.0/8 224.0.0.0/3)
EGRESS_FILE="$S/egress.env"   # the settings applied last, so that make run can put a cluster's back

kh::egress::settings() {  # the effective settings, one NAME=value per line
  local mode=${KUBEHANDS_SANDBOX_EGRESS:-none} dns=${KUBEHANDS_SANDBOX_DNS:-}
  if [[ -z $dns && ( $mode == internet || $mode == host ) ]]; then
    dns=$(awk '$1 == "nameserver" {print $2}' /etc/resolv.conf | paste -sd, -)
  fi
  echo "KUBEHANDS_SANDBOX_EGRESS=$mode"
  echo "KUBEHANDS_SANDBOX_EGRESS_ALLOW=${KUBEHANDS_SANDBOX_EGRESS_ALLOW:-}"
  echo "KUBEHANDS_SANDBOX_HOST_PORTS=${KUBEHANDS_SANDBOX_HOST_PORTS:-}"
  echo "KUBEHANDS_SANDBOX_DNS=$dns"
}

kh::egress::cidr_ok() { [[ $1 =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}(/([0-9]|[12][0-9]|3[0-2]))?$ ]]; }

kh::egress::validate() {  # MODE ALLOW PORTS DNS: die with a clear message on a bad value
  local mode=$1 allow=$2 ports=$3 dns=$4 item
  case $mode in
    none|internet|host) ;;
    *) for item in ${mode//,/ }; do
         kh::egress::cidr_ok "$item" || kh::die "KUBEHANDS_SANDBOX_EGRESS must be none, internet, host or a list" \
           "of IPv4 CIDRs (e.g. 203.0.113.0/24,198.51.100.7), got '$mode'"
       done ;;
  esac
  for item in ${allow//,/ }; do
    kh::egress::cidr_ok "$item" || kh::die "KUBEHANDS_SANDBOX_EGRESS_ALLOW: '$item' is not an IPv4 address or CIDR"
  done
  for item in ${ports//,/ }; do
    [[ $item =~ ^[0-9]+$ ]] && (( item >= 1 && item <= 65535 )) \
      || kh::die "KUBEHANDS_SANDBOX_HOST_PORTS: '$item' is not a TCP port (1-65535)"
  done
  for item in ${dns//,/ }; do
    [[ $item =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]] || kh::die "KUBEHANDS_SANDBOX_DNS: '$item' is not an IPv4 address"
  done
}

# kh::egress::apply: (re)write the chains and (re)start the resolver from the settings in the environment.
kh::egress::apply() {
  local settings mode allow ports dns
  settings=$(kh::egress::settings)
  mode=$(sed -n 's/^KUBEHANDS_SANDBOX_EGRESS=//p' <<< "$settings")
  allow=$(sed -n 's/^KUBEHANDS_SANDBOX_EGRESS_ALLOW=//p' <<< "$settings")
  ports=$(sed -n 's/^KUBEHANDS_SANDBOX_HOST_PORTS=//p' <<< "$settings")
  dns=$(sed -n 's/^KUBEHANDS_SANDBOX_DNS=//p' <<< "$settings")
  kh::egress::validate "$mode" "$allow" "$ports" "$dns"

  kh::egress::chain filter KUBEHANDS-EGRESS FORWARD -i "$BRIDGE" ! -o "$BRIDGE"
  local ipt=(iptables -w -t filter -A KUBEHANDS-EGRESS) cidr
  "${ipt[@]}" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  for cidr in ${allow//,/ }; do "${ipt[@]}" -d "$cidr" -j ACCEPT; done
  for cidr in "${EGRESS_BLOCKED[@]}"; do "${ipt[@]}" -d "$cidr" -j REJECT; done
  case $mode in
    none) ;;
    internet|host) "${ipt[@]}" -j ACCEPT ;;
    *) for cidr in ${mode//,/ }; do "${ipt[@]}" -d "$cidr" -j ACCEPT; done ;;
  esac
  "${ipt[@]}" -p tcp -j REJECT --reject-with tcp-reset
  "${ipt[@]}" -j REJECT

  kh::egress::chain filter KUBEHANDS-HOST INPUT -i "$BRIDGE"
  ipt=(iptables -w -t filter -A KUBEHANDS-HOST)
  "${ipt[@]}" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT   # replies to the host's own connections
  "${ipt[@]}" -d "$BRIDGE_IP" -p udp --dport 53 -j ACCEPT
  "${ipt[@]}" -d "$BRIDGE_IP" -p tcp --dport 53 -j ACCEPT
  "${ipt[@]}" -p tcp --dport "$APISERVER_PORT" -j ACCEPT   # the kubernetes Service (pods of the chart's tests)
  local port
  for port in ${ports//,/ }; do "${ipt[@]}" -p tcp --dport "$port" -j ACCEPT; done
  [[ $mode == host ]] && "${ipt[@]}" -j ACCEPT
  "${ipt[@]}" -p tcp -j REJECT --reject-with tcp-reset
  "${ipt[@]}" -j REJECT

  kh::egress::chain nat KUBEHANDS-MASQ POSTROUTING -s "$POD_CIDR" ! -o "$BRIDGE"
  iptables -w -t nat -A KUBEHANDS-MASQ -j MASQUERADE

  kh::egress::resolver "$dns"
  echo "$settings" > "$EGRESS_FILE"
  kh::log "sandbox egress: $mode${allow:+, also $allow}${ports:+, host ports $ports}; DNS: ${dns:-none (names do not resolve)}"
}

# kh::egress::chain TABLE CHAIN FROM MATCH...: an empty CHAIN, jumped to first thing from FROM for MATCH.
kh::egress::chain() {
  local table=$1 chain=$2 from=$3; shift 3
  iptables -w -t "$table" -N "$chain" 2>/dev/null || iptables -w -t "$table" -F "$chain"
  iptables -w -t "$table" -C "$from" "$@" -j "$chain" 2>/dev/null || iptables -w -t "$table" -I "$from" 1 "$@" -j "$chain"
}

# The pods' resolver: dnsmasq on the bridge address only, forwarding to the given servers (none: it refuses
# every name at once rather than letting lookups time out). It never reads the host's hosts file or config.
kh::egress::resolver() {
  local dns=$1 args=() server
  kh::stop dnsmasq
  for server in ${dns//,/ }; do args+=("--server=$server"); done
  kh::start dnsmasq -- dnsmasq --keep-in-foreground --log-facility=- --conf-file=/dev/null --user=nobody --group=nogroup --no-resolv --no-hosts \
    --bind-interfaces --listen-address="$BRIDGE_IP" --pid-file="$S/dnsmasq.pid" --cache-size=1000 \
    --domain-needed --bogus-priv --local=/cluster.local/ --address=/metadata.google.internal/ "${args[@]}"
  kh::wait_for "dnsmasq on ${BRIDGE_IP}:53" 10 kh::egress::resolver_listening || kh::require_alive dnsmasq
}

kh::egress::resolver_listening() { ss -Hlnu "src ${BRIDGE_IP}:53" | grep -q .; }

# kh::egress::remove: the chains and their jumps (kh::clean_iptables catches them too, by name), and the resolver.
kh::egress::remove() {
  kh::stop dnsmasq
  local table chain from table_chain_from rule
  for table_chain_from in filter:KUBEHANDS-EGRESS:FORWARD filter:KUBEHANDS-HOST:INPUT nat:KUBEHANDS-MASQ:POSTROUTING; do
    IFS=: read -r table chain from <<< "$table_chain_from"
    while read -r rule; do
      eval "iptables -w -t $table -D ${rule#-A }" 2>/dev/null || true
    done < <(iptables -w -t "$table" -S "$from" 2>/dev/null | grep -E -- "-j ${chain}( |$)" || true)
    iptables -w -t "$table" -F "$chain" 2>/dev/null || true
    iptables -w -t "$table" -X "$chain" 2>/dev/null || true
  done
  rm -f "$EGRESS_FILE" "$S/dnsmasq.pid"
}
