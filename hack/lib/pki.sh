# Certificates and kubeconfigs for the local cluster (openssl, EC P-256: fast to generate).
# shellcheck shell=bash

# kh::pki::cert NAME SUBJECT [SANS] : key + cert signed by the cluster CA into $PKI.
kh::pki::cert() {
  local name=$1 subject=$2 sans=${3:-}
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

kh::pki::init() {
  mkdir -p "$PKI"; chmod 0700 "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=kubehands-local-ca" -days 365 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/ca.crt" 2>/dev/null
  kh::pki::cert apiserver "/CN=kube-apiserver" \
    "IP:${BRIDGE_IP},IP:${SERVICE_IP},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  kh::pki::cert admin "/O=system:masters/CN=kubehands-admin"
  kh::pki::cert controller-manager "/CN=system:kube-controller-manager"
  kh::pki::cert scheduler "/CN=system:kube-scheduler"
  kh::pki::cert kubelet "/O=system:nodes/CN=system:node:${NODE_NAME}"
  kh::pki::cert kube-proxy "/CN=system:kube-proxy"
  kh::pki::cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# kh::pki::kubeconfig NAME OUT : a kubeconfig with the cert embedded (self-contained file).
kh::pki::kubeconfig() {
  local name=$1 out=$2
  cat > "$out" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: kubehands-local
  cluster:
    server: https://${BRIDGE_IP}:${APISERVER_PORT}
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: ${name}
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/${name}.crt")
    client-key-data: $(base64 -w0 < "$PKI/${name}.key")
contexts:
- name: kubehands-local
  context: {cluster: kubehands-local, user: ${name}}
current-context: kubehands-local
KUBECONFIG
  chmod 0600 "$out"
}
