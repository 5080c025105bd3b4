//! The Kubernetes API routes: generic handlers for every resource, driven by [`kinds::Kind`] and
//! the strategies of `kfp-apiservice`. No per-kind handlers.

pub mod apply;
pub mod handlers;
pub mod kinds;
pub mod managed;
pub mod output;
pub mod params;
pub mod watch;
