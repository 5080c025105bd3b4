//! `kfp-apiserver`: the server binary's library — command line, and (as the HTTP issue lands)
//! the tower stack, authentication, authorization and routes for both API views.
//!
//! # Layout
//! - [`options`]: the command line (clap), parsed once.
//! - [`validate`]: the `validate` subcommand, offline checks for GitOps repositories and CI.

pub mod options;
pub mod validate;
