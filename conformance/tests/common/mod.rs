//! What the kube-rs suites share: a client for a running dev server.

use kfp_conformance::DevServer;
use kube::{Client, Config};

/// A kube-rs client from the dev server's kubeconfig.
pub async fn client(s: &DevServer) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
    Client::try_from(config).expect("client")
}
