# shellcheck shell=bash
# The node of the local cluster: containerd, kubelet and kube-proxy on this machine, with
# a bridge CNI network. Sourced by tests/cluster/local-control-plane; every function here
# uses that script's STATE_DIR, CACHE_ROOT, log/die and process bookkeeping.
#
# What these machines need (docs/testing.md, "The node"):
# - cgroup v1 without systemd: kubelet cgroupDriver cgroupfs, cgroupsPerQOS false,
#   no node-allocatable enforcement, swap tolerated;
# - root without CAP_SYS_RESOURCE: containerd's CRI restrict_oom_score_adj, or runc
#   fails to set the sandbox's oom_score_adj of -998;
# - no registry: the pause image is built here (tests/cluster/pause) and every pod
#   image is loaded with `local-control-plane load-image`;
# - traffic only to loopback and to this machine's own network namespaces: the pod
#   network is a bridge with no masquerading and no forwarding off the machine; the
#   host and the pods talk over the bridge, where the API server also listens.

NODE_NAME=turnpike-node
POD_CIDR=${TURNPIKE_CLUSTER_POD_CIDR:-10.233.0.0/24} # the bridge network of the pods
BRIDGE=${TURNPIKE_CLUSTER_BRIDGE:-turnpike0}
SERVICE_IP=10.96.0.1 # the `kubernetes` Service: first address of SERVICE_CIDR
PAUSE_IMAGE=turnpike.local/pause:3.10
PAUSE_REV=1
CNI_BIN_DIRS=(/usr/lib/cni /opt/cni/bin)
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack iproute2 umoci skopeo)
# Kernel settings the kubelet rewrites at start (its "kernel tunables"); saved at `up`
# and put back at `down`.
KUBELET_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
	kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

node_ip() { # the bridge's (and so the node's) address: first host of POD_CIDR
	local net=${POD_CIDR%/*}
	[[ $net =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)\.0$ ]] ||
		die "TURNPIKE_CLUSTER_POD_CIDR=$POD_CIDR: expected an IPv4 network ending in .0, such as 10.233.0.0/24"
	printf '%s.%s.%s.1\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
}

cni_bin_dir() {
	local d
	for d in "${CNI_BIN_DIRS[@]}"; do
		[[ -x $d/bridge && -x $d/host-local && -x $d/portmap && -x $d/loopback ]] && {
			printf '%s\n' "$d"
			return 0
		}
	done
	return 1
}

# Debian packages of the node, installed when missing (as .ci/run installs nginx).
node_install_packages() {
	local need=() p
	for p in "${NODE_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
	((${#need[@]} == 0)) && return 0
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
		log "installing the node's Debian packages: ${need[*]}"
		# policy-rc.d keeps the packages' own containerd service from starting.
		local policy=/usr/sbin/policy-rc.d made_policy=0
		if [[ ! -e $policy ]]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
		fi
		# (`if`, not `((made_policy)) && rm`: the latter's status 1 when the machine
		# already had a policy-rc.d ended `up` under set -e without a word.)
		if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; then
			if ((made_policy)); then rm -f "$policy"; fi
			die "installing ${need[*]} with apt-get failed"
		fi
		if ((made_policy)); then rm -f "$policy"; fi
		log "installed ${need[*]}"
	else
		die "the node needs the Debian packages ${need[*]} (run as root with apt-get, or set TURNPIKE_CLUSTER_NODE=0)"
	fi
}

node_preflight() {
	[[ $(id -u) == 0 ]] || die "the node needs root (network namespaces, mounts, cgroups); set TURNPIKE_CLUSTER_NODE=0 for the control plane alone"
	node_install_packages
	local c
	for c in containerd containerd-shim-runc-v2 runc ctr iptables iptables-save ip skopeo umoci; do
		need_cmd "$c" "a Debian package of the node"
	done
	cni_bin_dir >/dev/null || die "no CNI plugins (bridge, host-local, portmap, loopback) in ${CNI_BIN_DIRS[*]}: apt-get install containernetworking-plugins"
	[[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] || die "no cgroup hierarchy mounted at /sys/fs/cgroup"
	# An existing $BRIDGE is refused by `up` after it has cleaned up a crashed run's
	# state (which may hold this very bridge), not here.
	check_free_space
}

# containerd's proxy: nothing listens there, so an image pull fails on the machine.
NODE_DEAD_PROXY=http://127.0.0.1:9

# containerd unpacks every image it imports under the state dir; a few hundred MiB do for
# the pause image and Turnpike's three. Less than that fails later and more obscurely.
NODE_MIN_FREE_MIB=${TURNPIKE_CLUSTER_MIN_FREE_MIB:-512}
check_free_space() {
	local dir=$STATE_DIR free
	while [[ ! -d $dir ]]; do dir=$(dirname "$dir"); done
	free=$(df -Pm "$dir" 2>/dev/null | awk 'NR == 2 { print $4 }') || return 0
	[[ $free =~ ^[0-9]+$ ]] || return 0
	((free >= NODE_MIN_FREE_MIB)) ||
		die "only ${free} MiB free under $dir; the node's containerd needs at least ${NODE_MIN_FREE_MIB} MiB (free some space, or point TURNPIKE_CLUSTER_DIR elsewhere)"
	log "node: ${free} MiB free under $dir"
}

# The pause image, built once per PAUSE_REV into the cache as a docker-archive.
pause_archive() { printf '%s/pause-%s-%s.tar\n' "$CACHE_ROOT" "$PAUSE_REV" "$(sha256 <"$HERE/pause/main.go")"; }

build_pause() {
	local tar tmp
	tar=$(pause_archive)
	[[ -s $tar ]] && return 0
	need_go
	mkdir -p "$CACHE_ROOT"
	tmp=$(mktemp -d "$CACHE_ROOT/.pause.XXXXXX")
	log "building the pause image $PAUSE_IMAGE (tests/cluster/pause)"
	(
		set -e
		gocmd "$HERE/pause" build -trimpath -ldflags "-s -w" -o "$tmp/pause" .
		umoci init --layout "$tmp/oci"
		umoci new --image "$tmp/oci:pause"
		umoci unpack --image "$tmp/oci:pause" "$tmp/bundle" >/dev/null
		install -m 0755 "$tmp/pause" "$tmp/bundle/rootfs/pause"
		umoci repack --image "$tmp/oci:pause" "$tmp/bundle" >/dev/null
		umoci config --image "$tmp/oci:pause" --architecture amd64 --os linux \
			--config.entrypoint /pause --config.user 65535:65535
		skopeo --insecure-policy copy -q "oci:$tmp/oci:pause" "docker-archive:$tmp/pause.tar:$PAUSE_IMAGE"
	) >"$tmp/build.log" 2>&1 || {
		cat "$tmp/build.log" >&2
		rm -rf "$tmp"
		die "building the pause image failed"
	}
	mv -f "$tmp/pause.tar" "$tar"
	rm -rf "$tmp"
}

node_certs() { # run inside gen_certs' subshell (cwd = pki, functions key/leaf defined)
	local ip=$1
	leaf kubelet "/CN=$NODE_NAME" serverAuth "IP:$ip, DNS:$NODE_NAME"
	leaf kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
	leaf apiserver-kubelet-client "/CN=turnpike-apiserver-kubelet-client" clientAuth
	leaf scheduler "/CN=system:kube-scheduler" clientAuth
	leaf kube-proxy "/CN=system:kube-proxy" clientAuth
}

# ---------------------------------------------------------------------------------------
# network: the bridge is made here, before the API server binds its address
# ---------------------------------------------------------------------------------------

node_network_up() {
	local ip s=$STATE_DIR
	ip=$(node_ip)
	printf '%s\n' "$BRIDGE" >"$s/run/bridge"
	ip link add "$BRIDGE" type bridge || die "cannot create the bridge $BRIDGE"
	ip addr add "$ip/${POD_CIDR#*/}" dev "$BRIDGE"
	ip link set "$BRIDGE" up
	# Service addresses go to the bridge, never to the machine's default route.
	ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$ip"
	mkdir -p "$s/cni/net.d" "$s/cni/ipam"
	# No isGateway and no ipMasq: the bridge plugin would turn on ip_forward and NAT pods
	# off the machine. The pods' default route points at the bridge address instead, so
	# the API server and the Service addresses (kube-proxy DNAT on the host) are reached
	# as local deliveries, and nothing is routed further.
	cat >"$s/cni/net.d/10-turnpike.conflist" <<-EOF
		{
		  "cniVersion": "1.0.0",
		  "name": "turnpike",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "$BRIDGE",
		      "isGateway": false,
		      "ipMasq": false,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "dataDir": "$s/cni/ipam",
		        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$ip"}]],
		        "routes": [{"dst": "0.0.0.0/0", "gw": "$ip"}]
		      }
		    },
		    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": false}
		  ]
		}
	EOF
}

# ---------------------------------------------------------------------------------------
# containerd
# ---------------------------------------------------------------------------------------

containerd_sock() { printf '%s/containerd/containerd.sock\n' "$STATE_DIR"; }
ctr_() { ctr --address "$(containerd_sock)" --namespace k8s.io "$@"; }

write_containerd_config() {
	local s=$STATE_DIR/containerd
	mkdir -p "$s/root" "$s/state" "$s/runc"
	cat >"$s/config.toml" <<-EOF
		version = 2
		root = "$s/root"
		state = "$s/state"
		# Plugins that would reach outside the state dir (/opt/containerd) or need
		# filesystems this node does not use.
		disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
		  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
		  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
		[grpc]
		  address = "$s/containerd.sock"
		[ttrpc]
		  address = "$s/containerd.sock.ttrpc"
		[debug]
		  address = ""
		[metrics]
		  address = ""
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "$PAUSE_IMAGE"
		  # Root here lacks CAP_SYS_RESOURCE: without this runc cannot lower the
		  # sandbox's oom_score_adj and every pod fails to start.
		  restrict_oom_score_adj = true
		  netns_mounts_under_state_dir = true
		  disable_apparmor = true
		  stream_server_address = "127.0.0.1"
		  stream_server_port = "0"
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    snapshotter = "overlayfs"
		    default_runtime_name = "runc"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		        SystemdCgroup = false
		        Root = "$s/runc"
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "$(cni_bin_dir)"
		    conf_dir = "$STATE_DIR/cni/net.d"
		    max_conf_num = 1
	EOF
}

containerd_ready() { ctr --address "$(containerd_sock)" version >/dev/null 2>&1; }

# load_image FILE: an image archive (docker-archive or OCI) into the node's containerd.
load_image() {
	local file=$1 out
	out=$(ctr_ images import --all-platforms "$file" 2>&1) ||
		die "importing $file into the node's containerd failed: $(tail -n 3 <<<"$out")"
	printf '%s\n' "$out" | sed -n 's/^unpacking \([^ ]*\) .*/\1/p'
}

# ---------------------------------------------------------------------------------------
# kubelet and kube-proxy configuration
# ---------------------------------------------------------------------------------------

write_kubelet_config() { # write_kubelet_config PORT HEALTHZ_PORT
	local s=$STATE_DIR ip
	ip=$(node_ip)
	mkdir -p "$s/kubelet/root" "$s/kubelet/pod-logs"
	cat >"$s/kubelet/config.yaml" <<-EOF
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		address: $ip
		port: $1
		readOnlyPort: 0
		healthzBindAddress: 127.0.0.1
		healthzPort: $2
		tlsCertFile: $s/pki/kubelet.crt
		tlsPrivateKeyFile: $s/pki/kubelet.key
		authentication:
		  anonymous: {enabled: false}
		  webhook: {enabled: true}
		  x509: {clientCAFile: $s/pki/ca.crt}
		authorization:
		  mode: Webhook
		containerRuntimeEndpoint: unix://$(containerd_sock)
		podLogsDir: $s/kubelet/pod-logs
		# cgroup v1 without systemd, and a root that may not manage every cgroup knob.
		cgroupDriver: cgroupfs
		failCgroupV1: false
		cgroupsPerQOS: false
		enforceNodeAllocatable: []
		failSwapOn: false
		# Images cannot be pulled again here: never garbage-collect them. And never
		# evict for disk: this node shares the machine's disk, which CI machines fill
		# to within a few GiB (1% of 252G is 2.5G: a threshold of 1% tainted the node
		# with disk-pressure and evicted every pod). 0% turns a signal off.
		imageGCHighThresholdPercent: 100
		imageGCLowThresholdPercent: 99
		evictionHard: {memory.available: "100Mi", nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%", imagefs.inodesFree: "0%"}
		evictionSoft: {}
		# Mounted Secrets and ConfigMaps are refreshed on this period (kubelet default 1m);
		# shorter so the e2e suite's volume-propagation steps finish sooner.
		syncFrequency: 10s
		resolvConf: /etc/resolv.conf
		serializeImagePulls: false
		maxPods: 60
	EOF
	write_kubeconfig "$s/kubelet/kubeconfig" "system:node:$NODE_NAME" \
		"$s/pki/kubelet-client.crt" "$s/pki/kubelet-client.key" "$API_PORT"
}

write_kube_proxy_config() { # write_kube_proxy_config METRICS_PORT HEALTHZ_PORT
	local s=$STATE_DIR ip
	ip=$(node_ip)
	mkdir -p "$s/kube-proxy"
	write_kubeconfig "$s/kube-proxy/kubeconfig" system:kube-proxy \
		"$s/pki/kube-proxy.crt" "$s/pki/kube-proxy.key" "$API_PORT"
	cat >"$s/kube-proxy/config.yaml" <<-EOF
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		mode: iptables
		clientConnection: {kubeconfig: $s/kube-proxy/kubeconfig}
		hostnameOverride: $NODE_NAME
		bindAddress: $ip
		clusterCIDR: $POD_CIDR
		detectLocalMode: ClusterCIDR
		metricsBindAddress: 127.0.0.1:$1
		healthzBindAddress: 127.0.0.1:$2
		nodePortAddresses: ["$ip/32"]
		# Leave the machine's conntrack sysctls alone, and do not route NodePorts on
		# 127.0.0.1 (that needs route_localnet=1).
		conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
		iptables: {localhostNodePorts: false, masqueradeAll: false}
	EOF
}

save_sysctls() {
	local k v
	: >"$STATE_DIR/run/sysctls"
	for k in "${KUBELET_SYSCTLS[@]}"; do
		v=$(cat "/proc/sys/$k" 2>/dev/null) || continue
		printf '%s %s\n' "$k" "$v" >>"$STATE_DIR/run/sysctls"
	done
}

restore_sysctls() {
	local k v
	[[ -f $STATE_DIR/run/sysctls ]] || return 0
	while read -r k v; do
		[[ -n $k && $k != */../* ]] || continue
		[[ $(cat "/proc/sys/$k" 2>/dev/null) == "$v" ]] || echo "$v" >"/proc/sys/$k" 2>/dev/null || true
	done <"$STATE_DIR/run/sysctls"
}

node_ready() {
	local out
	out=$(api_get "/api/v1/nodes/$NODE_NAME" | tr -d ' \n') || return 1
	[[ $out == *'"type":"Ready","status":"True"'* ]]
}

# ---------------------------------------------------------------------------------------
# cleanup: everything `up` made on the machine, whatever state it was left in
# ---------------------------------------------------------------------------------------

# Our containers: runc's state lives in our own root, so every container it lists is ours.
kill_containers() {
	local root=$STATE_DIR/containerd/runc d id
	[[ -d $root ]] || return 0
	for d in "$root"/*/; do
		[[ -d $d ]] || continue
		for id in $(runc --root "$d" list -q 2>/dev/null); do
			runc --root "$d" kill -a "$id" KILL >/dev/null 2>&1 || runc --root "$d" kill "$id" KILL >/dev/null 2>&1 || true
		done
		for id in $(runc --root "$d" list -q 2>/dev/null); do
			runc --root "$d" delete -f "$id" >/dev/null 2>&1 || true
		done
	done
}

# Shims outlive containerd by design; ours are the ones started with our socket. Each
# listens on a socket in containerd's fixed /run/containerd/s, named in the task's
# `address` file: removed here, as the shim would on a clean shutdown.
kill_shims() {
	local sock pid cmd f addr
	sock=$(containerd_sock)
	for pid in $(pgrep -f containerd-shim 2>/dev/null); do
		cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
		[[ $cmd == *"-address $sock "* || $cmd == *"-address $sock" ]] && kill -KILL "$pid" 2>/dev/null
	done
	for f in "$STATE_DIR"/containerd/state/io.containerd.runtime.v2.task/*/*/address; do
		[[ -f $f ]] || continue
		addr=$(cat "$f" 2>/dev/null) || continue
		addr=${addr#unix://}
		[[ $addr == /run/containerd/s/* && -S $addr ]] && rm -f "$addr"
	done
	return 0
}

unmount_state() { # every mount point under STATE_DIR, deepest first
	local m i
	for i in 1 2 3; do
		mapfile -t mounts < <(awk -v d="$STATE_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
		((${#mounts[@]} == 0)) && return 0
		for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
	done
}

# iptables chains that kube-proxy and the portmap plugin made (KUBE-*, CNI-*) and the
# rules that jump to them, in every table of both families.
clean_iptables() {
	local save restore t chain
	for save in iptables-save ip6tables-save; do
		command -v "$save" >/dev/null 2>&1 || continue
		restore=${save%-save}
		for t in filter nat mangle raw; do
			local dump
			dump=$("$save" -t "$t" 2>/dev/null) || continue
			# Rules that jump to one of these chains, deleted from built-in chains first.
			while read -r rule; do
				[[ -n $rule ]] || continue
				# shellcheck disable=SC2086 # the rule is a list of iptables arguments
				eval "$restore -t $t -D ${rule#-A }" 2>/dev/null || true
			done < <(grep -E '^-A [A-Z]+ .*-j (KUBE|CNI)-' <<<"$dump" | grep -vE '^-A (KUBE|CNI)-')
			for chain in $(sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p' <<<"$dump"); do
				"$restore" -t "$t" -F "$chain" 2>/dev/null || true
			done
			for chain in $(sed -n 's/^:\(\(KUBE\|CNI\)-[^ ]*\) .*/\1/p' <<<"$dump"); do
				"$restore" -t "$t" -X "$chain" 2>/dev/null || true
			done
		done
	done
}

# cgroups the containers got (runc makes them; with cgroupsPerQOS off they sit right
# under each hierarchy's root): empty directories named after our containers' ids.
clean_cgroups() {
	[[ -f $STATE_DIR/run/cgroups.before ]] || return 0
	local d
	while read -r d; do
		[[ -n $d && -d $d ]] || continue
		grep -qxF "$d" "$STATE_DIR/run/cgroups.before" && continue
		rmdir "$d" 2>/dev/null || true
	done < <(list_cgroups | sort -r)
}

list_cgroups() { { find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d 2>/dev/null || true; } | sort; }

# The kubelet keeps a symlink per container in /var/log/containers (a fixed path).
clean_container_logs() {
	local l
	[[ -d /var/log/containers ]] || return 0
	for l in /var/log/containers/*; do
		[[ -L $l ]] || continue
		[[ $(readlink "$l") == "$STATE_DIR/"* ]] && rm -f "$l"
	done
	if [[ -f $STATE_DIR/run/made-var-log-containers ]]; then rmdir /var/log/containers 2>/dev/null || true; fi
}

node_cleanup() {
	local s=$STATE_DIR bridge
	[[ -d $s/containerd || -f $s/run/bridge ]] || return 0
	kill_containers
	stop_component containerd
	kill_shims
	unmount_state
	if [[ -f $s/run/bridge ]]; then
		read -r bridge <"$s/run/bridge"
		if [[ -n $bridge ]] && ip link show "$bridge" >/dev/null 2>&1; then
			local veth
			for veth in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
				ip link del "$veth" 2>/dev/null || true
			done
			ip link del "$bridge" 2>/dev/null || true
		fi
	fi
	clean_iptables
	clean_cgroups
	clean_container_logs
	restore_sysctls
	if [[ -f $s/run/made-run-containerd ]]; then
		rmdir /run/containerd/s /run/containerd 2>/dev/null || true
	fi
}

# What `down` must leave as it found it, one line per thing (the node test compares).
node_footprint() {
	echo "## mounts"
	awk '{print $5}' /proc/self/mountinfo | grep -vE '^/(proc|sys|dev)(/|$)' | sort
	echo "## links"
	ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort
	echo "## routes"
	ip route show | sort
	echo "## iptables"
	# Rules only: table headers (`*nat`) and `COMMIT` appear once kube-proxy has loaded
	# a table and stay after every rule is gone (the kernel keeps the table), and a
	# machine that never loaded one prints nothing at all (grep's status 1 is fine).
	{ iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; } | { grep -vE '^(#|:|\*|COMMIT$)' || true; } | sed 's/\[[0-9]*:[0-9]*\]//' | sort
	echo "## cgroups"
	list_cgroups
	echo "## netns"
	ls /run/netns 2>/dev/null || true
	echo "## sysctls"
	local k
	for k in "${KUBELET_SYSCTLS[@]}" net/ipv4/ip_forward; do printf '%s=%s\n' "$k" "$(cat "/proc/sys/$k" 2>/dev/null)"; done
	echo "## processes"
	local p
	for p in /proc/[0-9]*; do # processes that name this cluster's state dir (ours, or its pods' shims)
		if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$STATE_DIR/"; then cat "$p/comm" 2>/dev/null || true; fi
	done | sort
	return 0
}
