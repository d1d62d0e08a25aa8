//! Finding the cluster: kubeconfig (or in-cluster) configuration, the client and the
//! namespace a command works in.

use std::path::PathBuf;

use clap::Args;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::error::{Error, chain};
use crate::validate;

/// Flags every cluster command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// Namespace (default: the namespace of the kubeconfig context, else `default`).
    #[arg(long, short = 'n', value_parser = validate::dns_label)]
    pub namespace: Option<String>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// Builds a client as kubectl would and resolves the namespace: `-n`, else the
/// context's namespace (in a pod: the service account's), else `default`.
///
/// # Errors
/// [`Error::Unreachable`] when no usable configuration is found.
pub async fn connect(args: &ClusterArgs) -> Result<(Client, String), Error> {
    let unreachable = |e: &(dyn std::error::Error + 'static)| Error::Unreachable(chain(e));
    let config = if args.kubeconfig.is_none() && args.context.is_none() {
        Config::infer().await.map_err(|e| unreachable(&e))?
    } else {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..KubeConfigOptions::default()
        };
        match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| unreachable(&e))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| unreachable(&e))?
    };
    let client = Client::try_from(config).map_err(|e| unreachable(&e))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((client, namespace))
}
