//! `kfp-apiserver`: the server binary's library — command line, the request stack, the
//! Kubernetes API routes, and the `validate` subcommand.
//!
//! # Layout
//! - [`options`]: the command line (clap), parsed once.
//! - [`serve`], [`server`], [`dev`]: options -> running server; TLS accept, HTTP/1.1 + HTTP/2,
//!   graceful shutdown; the `--dev` data directory.
//! - [`stack`]: the one place the request stack is assembled; [`layers`]: its layers, one
//!   concern each.
//! - [`app`]: shared state, the non-resource routes, `AppService` (the stack as a service).
//! - [`request_info`]: what a request is about (the router).
//! - [`auth`]: users and decisions; [`front_proxy`]: the front proxy, x509 client certificates
//!   and KFP's user header; [`delegated`]: TokenReview and SubjectAccessReview against the host
//!   cluster, cached; [`extension_auth`]: the `extension-apiserver-authentication` ConfigMap;
//!   [`service_account`]: ServiceAccount tokens verified locally with the issuer's keys.
//! - [`registry`]: write semantics for every resource and both views (read-modify-write,
//!   field management, finalizers, dependents, dry run).
//! - [`kube`]: the Kubernetes routes (thin over the registry), watch, encodings.
//! - [`kfp`]: the KFP v2beta1 REST view over the same registry and store.
//! - [`docs`]: discovery and OpenAPI documents with ETags.
//! - [`error`]: the single conversion to `Status`.
//! - [`metrics`], [`store_metrics`], [`body`]: Prometheus metrics (requests, watches, store
//!   latency); the response body type.
//! - [`validate`]: the `validate` subcommand; [`manifest`]: the `manifest` subcommand;
//!   [`migrate`]: the `migrate` subcommand's logic (sources, plan, writes with ids kept).

pub mod app;
pub mod auth;
pub mod body;
pub mod delegated;
pub mod dev;
pub mod docs;
pub mod error;
pub mod extension_auth;
pub mod front_proxy;
pub mod kfp;
pub mod kube;
pub mod layers;
pub mod manifest;
pub mod metrics;
pub mod migrate;
pub mod options;
pub mod registry;
pub mod request_info;
pub mod serve;
pub mod server;
pub mod service_account;
pub mod stack;
pub mod store;
pub mod store_metrics;
pub mod validate;
