//! The deployment assets agree with the binaries, one executable by concern: `service` (the
//! Kubernetes manifests, autoscaling, alerts and dashboard of the HTTP service, the container
//! image), `gateway` (the gateway overlay and Kong), `jobs` (the bulk-job worker's manifests,
//! KEDA and alerts).

#[path = "../common/mod.rs"]
mod common;
#[path = "../../../ofa-hub/tests/fakehub/mod.rs"]
mod fakehub;

mod gateway;
mod jobs;
mod service;
