//! How an injected pod looks to everyone who is not the injector: the names the
//! operator's webhook gives the sidecar it adds, and where a pod names its target.
//! `kubectl turnpike usage` finds sidecars by these; both sides import them from here
//! so they cannot drift apart.

/// Pod annotation naming the target whose bundle the sidecar enforces; it wins over
/// [`NAME_LABEL`] and [`APP_LABEL`], which are tried in that order.
pub const TARGET_ANNOTATION: &str = "turnpike.dev/target";
/// The recommended label for the target name.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The older, common label for the target name.
pub const APP_LABEL: &str = "app";
/// The injected container's name.
pub const CONTAINER_NAME: &str = "turnpike-sidecar";
/// Name of the sidecar's admin port (probes, metrics, `/internal/...`).
pub const ADMIN_PORT_NAME: &str = "turnpike-admin";
/// The sidecar's admin port unless the operator is started with another
/// (`--sidecar-admin-port`); readers should look the port up by [`ADMIN_PORT_NAME`].
pub const DEFAULT_ADMIN_PORT: u16 = 9901;
