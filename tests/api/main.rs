//! Black-box API tests: the real binary, a real WebSocket, a fake streaming LLM.
mod bad_input;
mod chat;
mod cli;
mod helpers;
