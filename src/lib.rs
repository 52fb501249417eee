//! Companion: an AI learning companion served over WebSocket.
//!
//! Map of the crate (see ARCHITECTURE.md for how a message flows):
//! - [`config`]: layered settings (default file, local file, environment) validated into types.
//! - [`auth`]: signed tokens (HS256) for learners, mentors, course teams and admins.
//! - [`retrieval`]: course content parsing, chunking, embedding, the vector index seam, search.
//! - [`llm`]: the LLM seam, its OpenAI-compatible streaming client, and the policy that bounds
//!   each call (retries before the first token, deadlines, a token cap).
//! - [`prompt`]: system prompt templates and token-budgeted context assembly.
//! - [`transcript`]: conversations and messages as data, and the seam a turn stores them through.
//! - [`learner`]: profiles, mentor sessions and project files as data, and their seam.
//! - [`store`]: persistence (SQLite or PostgreSQL): pool, migrations, dialects, row mapping.
//! - [`chat`]: the one path that answers a question.
//! - [`guard`]: course policies enforced on the model's output (solutions, citations, windows).
//! - [`project`]: learners' project files (checks, archives, git import, code-aware chunks,
//!   private indexing) and the course's project briefs.
//! - [`review`]: feedback, flags, annotations, search, retention and the mentor's digest.
//! - [`index`]: the retriever built from settings, content and project files indexed into it.
//! - [`eval`]: retrieval evaluation over a question set.
//! - [`http`]: axum routes, the WebSocket gateway and its wire protocol, pages.
//! - [`startup`]: builds everything from settings, binds, serves, shuts down.
//! - [`tokens`]: token sequences back into text without losing a cut character.
//! - [`cli`]: the command line.
pub mod auth;
pub mod bench;
pub mod chat;
pub mod cli;
pub mod config;
pub mod eval;
pub mod guard;
pub mod http;
pub mod index;
pub mod learner;
pub mod llm;
pub mod project;
pub mod prompt;
pub mod retrieval;
pub mod review;
pub mod startup;
pub mod store;
pub mod tokens;
pub mod transcript;
