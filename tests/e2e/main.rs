//! End-to-end tests: the gateway on real sockets (127.0.0.1, ephemeral
//! ports) with real fake backends. One binary, a module per feature.

mod admin;
mod balance;
mod client_faults;
mod common;
mod concurrency;
mod config;
mod container;
mod corners;
mod dashboard;
mod durability;
mod explain;
mod flags;
mod hardening;
mod health;
mod health_history;
mod inline;
mod live;
mod observability;
mod passive;
mod policies;
mod policy_admin;
mod process;
mod proxy;
mod recovery;
mod revisions;
mod shared_store;
mod slow_readers;
mod startup;
mod streaming;
mod strict;
mod threads;
mod tls;
