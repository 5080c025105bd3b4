//! The Kubernetes API routes: generic handlers for every resource, thin over the registry
//! (`crate::registry`) and the resource table of `kfp-apiservice`. No per-kind handlers.

pub mod handlers;
pub mod output;
pub mod params;
pub mod watch;
