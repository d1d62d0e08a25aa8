//! What the injector puts into a pod, validated once at start: the sidecar image, how it
//! is injected (native sidecar or plain container), its resources and its ports.

use std::collections::BTreeSet;

/// How the sidecar is added to a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes >= 1.29; always on our
    /// minimum 1.33): it starts before the workload, stops after it, and does not keep
    /// a Job's pod running.
    Native,
    /// A regular container appended to `spec.containers`, for clusters without native
    /// sidecars (`--plain-sidecar`).
    Plain,
}

/// A Kubernetes resource quantity (`50m`, `128Mi`, `0.5`), checked against the
/// API server's grammar so that a typo in a flag fails the operator's start instead of
/// every injected pod's creation.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantity {
    text: String,
    /// The value in base units (cores, bytes), for comparing requests with limits.
    value: f64,
}

impl Quantity {
    /// Parses `<digits>[.<digits>][suffix]` with a binary (`Ki`..`Ei`), decimal
    /// (`n`, `u`, `m`, `k`, `M`..`E`) or exponent (`e3`) suffix; negative values and
    /// signs are refused (a sidecar resource is never negative).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("{text:?} is not a Kubernetes quantity (for example 50m, 0.5, 32Mi, 1Gi)");
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let mut parts = number.split('.');
        let whole = parts.next().unwrap_or_default();
        let frac = parts.next();
        if parts.next().is_some()
            || (whole.is_empty() && frac.is_none_or(str::is_empty))
            || frac.is_some_and(str::is_empty)
        {
            return Err(bad());
        }
        let base: f64 = number.parse().map_err(|_| bad())?;
        let multiplier = match suffix {
            "" => 1.0,
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 1024f64,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| bad())?;
                if !(-18..=18).contains(&e) {
                    return Err(bad());
                }
                10f64.powi(e)
            }
            _ => return Err(bad()),
        };
        Ok(Self {
            text: text.to_owned(),
            value: base * multiplier,
        })
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value in base units.
    pub fn value(&self) -> f64 {
        self.value
    }
}

/// The sidecar's resource requests and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarResources {
    /// CPU request (default `50m`).
    pub cpu_request: Quantity,
    /// Memory request (default `32Mi`).
    pub memory_request: Quantity,
    /// CPU limit (default `500m`).
    pub cpu_limit: Quantity,
    /// Memory limit (default `128Mi`).
    pub memory_limit: Quantity,
}

impl SidecarResources {
    /// Parses the four quantities and checks requests <= limits (the API server refuses a
    /// pod whose request exceeds its limit, so every injected pod would fail).
    pub fn parse(
        cpu_request: &str,
        memory_request: &str,
        cpu_limit: &str,
        memory_limit: &str,
    ) -> Result<Self, String> {
        let r = Self {
            cpu_request: Quantity::parse(cpu_request).map_err(|e| format!("CPU request: {e}"))?,
            memory_request: Quantity::parse(memory_request)
                .map_err(|e| format!("memory request: {e}"))?,
            cpu_limit: Quantity::parse(cpu_limit).map_err(|e| format!("CPU limit: {e}"))?,
            memory_limit: Quantity::parse(memory_limit)
                .map_err(|e| format!("memory limit: {e}"))?,
        };
        if r.cpu_request.value() > r.cpu_limit.value() {
            return Err(format!(
                "the sidecar's CPU request {} exceeds its limit {}",
                r.cpu_request.as_str(),
                r.cpu_limit.as_str()
            ));
        }
        if r.memory_request.value() > r.memory_limit.value() {
            return Err(format!(
                "the sidecar's memory request {} exceeds its limit {}",
                r.memory_request.as_str(),
                r.memory_limit.as_str()
            ));
        }
        Ok(r)
    }
}

impl Default for SidecarResources {
    fn default() -> Self {
        let q = |s: &str| Quantity {
            text: s.to_owned(),
            value: Quantity::parse(s).map(|q| q.value).unwrap_or_default(),
        };
        Self {
            cpu_request: q("50m"),
            memory_request: q("32Mi"),
            cpu_limit: q("500m"),
            memory_limit: q("128Mi"),
        }
    }
}

/// Everything the injector needs to decide and build a patch.
#[derive(Clone, Debug)]
pub struct InjectorConfig {
    /// The sidecar image.
    pub image: String,
    /// Native sidecar or plain container.
    pub mode: SidecarMode,
    /// Requests and limits.
    pub resources: SidecarResources,
    /// Default proxy port (`--sidecar-listen-port`); a pod's annotation
    /// `turnpike.dev/listen-port` overrides it.
    pub listen_port: u16,
    /// Default workload port (`--sidecar-upstream-port`); a pod's annotation
    /// `turnpike.dev/upstream-port` overrides it.
    pub upstream_port: u16,
    /// The admin port (`--sidecar-admin-port`), the same in every injected pod.
    pub admin_port: u16,
    /// The operator's version, written to the `turnpike.dev/injected` annotation.
    pub version: String,
    /// Namespaces never touched: `kube-system` and the operator's own.
    pub protected_namespaces: BTreeSet<String>,
    /// Where the injected sidecar reads its bundle (`--sidecar-bundle-source`).
    pub bundle_source: SidecarBundleSource,
    /// The public keys the sidecar trusts (`TURNPIKE_BUNDLE_TRUST` form), from the
    /// operator's signing key. `None` (tests, or an operator that signs nothing)
    /// injects `--insecure-unsigned-bundles` instead, visibly in the pod spec.
    pub bundle_trust: Option<String>,
}

/// Where the injected sidecar reads its bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidecarBundleSource {
    /// Watch the bundle objects through the API server (a revocation arrives in about
    /// a second); the mounted volume serves at start-up and as the fallback. The
    /// sidecar gets a ServiceAccount token, bound to the Role the operator creates.
    Api,
    /// Only the mounted volume (refreshed by the kubelet, 60-120 s); the sidecar gets
    /// no ServiceAccount token and writes no Events.
    Files,
}

/// The sidecar image of this release.
pub fn default_image() -> String {
    format!(
        "ghcr.io/turnpike/turnpike-sidecar:{}",
        env!("CARGO_PKG_VERSION")
    )
}

impl InjectorConfig {
    /// The defaults of this release for an operator in `own_namespace`.
    pub fn new(own_namespace: &str) -> Self {
        Self {
            image: default_image(),
            mode: SidecarMode::Native,
            resources: SidecarResources::default(),
            listen_port: super::inject::DEFAULT_LISTEN_PORT,
            upstream_port: super::inject::DEFAULT_UPSTREAM_PORT,
            admin_port: super::inject::DEFAULT_ADMIN_PORT,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protected_namespaces: BTreeSet::from(["kube-system".to_owned(), own_namespace.into()]),
            bundle_source: SidecarBundleSource::Api,
            bundle_trust: None,
        }
    }

    /// Sets the three port defaults, refusing 0 and any two that are equal: each would
    /// make every injected pod that keeps the defaults fail (or be refused), so the
    /// operator stops at start instead.
    pub fn set_ports(&mut self, listen: u16, upstream: u16, admin: u16) -> Result<(), String> {
        for (flag, port) in [
            ("--sidecar-listen-port", listen),
            ("--sidecar-upstream-port", upstream),
            ("--sidecar-admin-port", admin),
        ] {
            if port == 0 {
                return Err(format!("{flag} must be a port from 1 to 65535"));
            }
        }
        for (a, b, port) in [
            (
                "--sidecar-listen-port",
                "--sidecar-upstream-port",
                listen == upstream,
            ),
            (
                "--sidecar-listen-port",
                "--sidecar-admin-port",
                listen == admin,
            ),
            (
                "--sidecar-upstream-port",
                "--sidecar-admin-port",
                upstream == admin,
            ),
        ] {
            if port {
                return Err(format!(
                    "{a} and {b} are equal; the sidecar needs distinct ports for its proxy, the workload and its admin server"
                ));
            }
        }
        self.listen_port = listen;
        self.upstream_port = upstream;
        self.admin_port = admin;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for (text, value) in [
            ("50m", 0.05),
            ("0.5", 0.5),
            ("1", 1.0),
            ("32Mi", 32.0 * 1024.0 * 1024.0),
            ("1Gi", 1024f64.powi(3)),
            ("128M", 128e6),
            (".5", 0.5),
            ("1e3", 1000.0),
        ] {
            let q = Quantity::parse(text).unwrap();
            assert!((q.value() - value).abs() < 1e-9, "{text}");
            assert_eq!(q.as_str(), text);
        }
        for bad in [
            "", "-1", "+1", "1.", "1..2", "abc", "1mi", "1 Mi", "1e", "1e99", "m",
        ] {
            let err = Quantity::parse(bad).unwrap_err();
            assert!(err.contains("not a Kubernetes quantity"), "{bad}: {err}");
        }
    }

    #[test]
    fn port_defaults_are_distinct_and_non_zero() {
        let mut c = InjectorConfig::new("ns");
        assert_eq!(
            (c.listen_port, c.upstream_port, c.admin_port),
            (9080, 8080, 9901)
        );
        c.set_ports(7080, 3000, 7901).unwrap();
        assert_eq!(
            (c.listen_port, c.upstream_port, c.admin_port),
            (7080, 3000, 7901)
        );
        let err = c.set_ports(9080, 9080, 9901).unwrap_err();
        assert!(
            err.starts_with("--sidecar-listen-port and --sidecar-upstream-port are equal"),
            "{err}"
        );
        let err = c.set_ports(9080, 8080, 8080).unwrap_err();
        assert!(
            err.starts_with("--sidecar-upstream-port and --sidecar-admin-port"),
            "{err}"
        );
        let err = c.set_ports(0, 8080, 9901).unwrap_err();
        assert!(err.contains("--sidecar-listen-port must be"), "{err}");
        // A refused setting changes nothing.
        assert_eq!(
            (c.listen_port, c.upstream_port, c.admin_port),
            (7080, 3000, 7901)
        );
    }

    #[test]
    fn requests_may_not_exceed_limits() {
        assert!(SidecarResources::parse("50m", "32Mi", "500m", "128Mi").is_ok());
        let err = SidecarResources::parse("1", "32Mi", "500m", "128Mi").unwrap_err();
        assert!(
            err.contains("CPU request 1 exceeds its limit 500m"),
            "{err}"
        );
        let err = SidecarResources::parse("50m", "1Gi", "500m", "128Mi").unwrap_err();
        assert!(err.contains("memory request"), "{err}");
        let err = SidecarResources::parse("50m", "32Mi", "lots", "128Mi").unwrap_err();
        assert!(err.starts_with("CPU limit: "), "{err}");
        assert_eq!(
            SidecarResources::default(),
            SidecarResources::parse("50m", "32Mi", "500m", "128Mi").unwrap()
        );
    }
}
