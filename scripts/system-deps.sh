#!/usr/bin/env bash
# System packages the test suite needs: nginx (parity tests, rendered bench configs),
# haproxy (the benchmark's rendered haproxy.cfg is checked with haproxy -c), a JDK (the
# deploy tests build a small Java app with javac and jar), curl/openssl (TLS tests, the
# README walkthrough), logrotate (the example rule of docs/operations.md is run),
# chromium (the status page's tests drive a headless Chromium over the DevTools protocol),
# and for the fleet tests' hosts (network namespaces on a bridge, one real sshd in each):
# openssh-server (sshd), openssh-client (ssh-keygen, and scp for the staging benchmark),
# iproute2 (ip netns, bridge, veth) and util-linux (unshare, nsenter, mount); systemd's
# systemd-socket-activate (the restart tests start nonstop with LISTEN_FDS through it).
# Installs only what is missing; uses sudo when not root.
set -euo pipefail
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
{ command -v javac >/dev/null 2>&1 && command -v jar >/dev/null 2>&1; } || missing+=(openjdk-17-jdk-headless)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
{ command -v ssh-keygen >/dev/null 2>&1 && command -v scp >/dev/null 2>&1; } || missing+=(openssh-client)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
{ command -v unshare >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1; } || missing+=(util-linux)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || missing+=(logrotate)
command -v systemd-socket-activate >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
