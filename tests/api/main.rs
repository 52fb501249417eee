//! Black-box API tests: the service in-process on port 0 (the binary where the process itself
//! is under test), a real WebSocket with typed frames, a fake streaming LLM.
mod authz;
mod bad_input;
mod browser;
mod chat;
mod cli;
mod crash;
mod durability;
mod faults;
mod flags;
mod gateway;
mod guard;
mod helpers;
mod inspector;
mod learner_context;
mod mentor;
mod metrics;
mod openapi;
#[path = "../common/pg.rs"]
mod pg;
mod policies;
mod quotas;
mod scale;
mod studio;
mod trust;
