//! Black-box API tests: the real binary, a real WebSocket, a fake streaming LLM.
mod bad_input;
mod browser;
mod chat;
mod cli;
mod crash;
mod helpers;
mod learner_context;
mod mentor;
mod openapi;
