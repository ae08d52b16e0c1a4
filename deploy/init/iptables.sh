#!/bin/sh
# auditmesh-init: sends the pod's TCP traffic through the auditmesh sidecar, Istio-style.
# Applies to the network namespace it runs in (the pod's), as root with NET_ADMIN and NET_RAW.
#
#   inbound:  TCP arriving for the pod          -> REDIRECT to AUDITMESH_INBOUND_PORT  (15006)
#             except the admin port (probes, metrics) and AUDITMESH_EXCLUDE_INBOUND_PORTS
#             ("*" there turns inbound capture off).
#   outbound: TCP the pod's processes start     -> REDIRECT to AUDITMESH_OUTBOUND_PORT (15001)
#             except the sidecar's own traffic (owner match on AUDITMESH_PROXY_UID, or it would
#             loop back into itself), loopback, AUDITMESH_EXCLUDE_OUTBOUND_PORTS and
#             AUDITMESH_EXCLUDE_OUTBOUND_CIDRS.
#
# Lists are comma-separated. Running it again replaces the rules rather than adding to them.
# The sidecar reads each redirected connection's original destination (SO_ORIGINAL_DST).
set -eu

INBOUND_PORT="${AUDITMESH_INBOUND_PORT:-15006}"
OUTBOUND_PORT="${AUDITMESH_OUTBOUND_PORT:-15001}"
PROXY_UID="${AUDITMESH_PROXY_UID:-1337}"
ADMIN_PORT="${AUDITMESH_ADMIN_PORT:-15020}"
EXCLUDE_INBOUND_PORTS="${AUDITMESH_EXCLUDE_INBOUND_PORTS:-}"
EXCLUDE_OUTBOUND_PORTS="${AUDITMESH_EXCLUDE_OUTBOUND_PORTS:-}"
EXCLUDE_OUTBOUND_CIDRS="${AUDITMESH_EXCLUDE_OUTBOUND_CIDRS:-}"

fail() {
  echo "auditmesh-init: $*" >&2
  exit 1
}

is_port() {
  case "$1" in '' | *[!0-9]*) return 1 ;; esac
  [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}

for p in "$INBOUND_PORT" "$OUTBOUND_PORT" "$ADMIN_PORT"; do is_port "$p" || fail "not a TCP port: '$p'"; done
case "$PROXY_UID" in '' | *[!0-9]*) fail "AUDITMESH_PROXY_UID is not a uid: '$PROXY_UID'" ;; esac

# Splits a comma-separated list into words (spaces tolerated).
words() { echo "$1" | tr ',' ' '; }

for p in $(words "$EXCLUDE_OUTBOUND_PORTS"); do is_port "$p" || fail "AUDITMESH_EXCLUDE_OUTBOUND_PORTS: not a TCP port: '$p'"; done
if [ "$EXCLUDE_INBOUND_PORTS" != "*" ]; then
  for p in $(words "$EXCLUDE_INBOUND_PORTS"); do is_port "$p" || fail "AUDITMESH_EXCLUDE_INBOUND_PORTS: not a TCP port: '$p'"; done
fi

# apply IPTABLES FAMILY: one address family's rules (FAMILY "4" or "6").
apply() {
  ipt="$1"
  family="$2"
  # Idempotent: unhook and drop the chains of an earlier run first.
  "$ipt" -t nat -D PREROUTING -p tcp -j AUDITMESH_INBOUND 2>/dev/null || true
  "$ipt" -t nat -D OUTPUT -p tcp -j AUDITMESH_OUTPUT 2>/dev/null || true
  for chain in AUDITMESH_INBOUND AUDITMESH_IN_REDIRECT AUDITMESH_OUTPUT AUDITMESH_REDIRECT; do
    "$ipt" -t nat -F "$chain" 2>/dev/null || true
    "$ipt" -t nat -X "$chain" 2>/dev/null || true
  done
  for chain in AUDITMESH_INBOUND AUDITMESH_IN_REDIRECT AUDITMESH_OUTPUT AUDITMESH_REDIRECT; do
    "$ipt" -t nat -N "$chain"
  done
  "$ipt" -t nat -A AUDITMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports "$INBOUND_PORT"
  "$ipt" -t nat -A AUDITMESH_REDIRECT -p tcp -j REDIRECT --to-ports "$OUTBOUND_PORT"

  # Inbound.
  if [ "$EXCLUDE_INBOUND_PORTS" != "*" ]; then
    "$ipt" -t nat -A AUDITMESH_INBOUND -p tcp --dport "$ADMIN_PORT" -j RETURN
    for p in $(words "$EXCLUDE_INBOUND_PORTS"); do
      "$ipt" -t nat -A AUDITMESH_INBOUND -p tcp --dport "$p" -j RETURN
    done
    "$ipt" -t nat -A AUDITMESH_INBOUND -p tcp -j AUDITMESH_IN_REDIRECT
    "$ipt" -t nat -A PREROUTING -p tcp -j AUDITMESH_INBOUND
  fi

  # Outbound. The owner match comes first: the sidecar's own connections (to upstreams, and to
  # the app on loopback) must never be redirected back into it.
  "$ipt" -t nat -A AUDITMESH_OUTPUT -m owner --uid-owner "$PROXY_UID" -j RETURN
  "$ipt" -t nat -A AUDITMESH_OUTPUT -o lo -j RETURN
  for p in $(words "$EXCLUDE_OUTBOUND_PORTS"); do
    "$ipt" -t nat -A AUDITMESH_OUTPUT -p tcp --dport "$p" -j RETURN
  done
  for cidr in $(words "$EXCLUDE_OUTBOUND_CIDRS"); do
    case "$cidr" in *:*) cidr_family=6 ;; *) cidr_family=4 ;; esac
    if [ "$cidr_family" = "$family" ]; then
      "$ipt" -t nat -A AUDITMESH_OUTPUT -d "$cidr" -j RETURN
    fi
  done
  "$ipt" -t nat -A AUDITMESH_OUTPUT -p tcp -j AUDITMESH_REDIRECT
  "$ipt" -t nat -A OUTPUT -p tcp -j AUDITMESH_OUTPUT
}

command -v iptables >/dev/null 2>&1 || fail "iptables not found"
apply iptables 4
# IPv6 only where the pod has it: a single-stack cluster's pods often have no ip6tables nat table.
if command -v ip6tables >/dev/null 2>&1 && [ -e /proc/net/if_inet6 ] && ip6tables -t nat -L -n >/dev/null 2>&1; then
  apply ip6tables 6
fi
echo "auditmesh-init: inbound -> :$INBOUND_PORT, outbound -> :$OUTBOUND_PORT, uid $PROXY_UID exempt, admin :$ADMIN_PORT skipped" \
  "(excluded inbound ports: ${EXCLUDE_INBOUND_PORTS:-none}; outbound ports: ${EXCLUDE_OUTBOUND_PORTS:-none}; outbound CIDRs: ${EXCLUDE_OUTBOUND_CIDRS:-none})"
