//! `companion bench fake-llm`: an OpenAI-compatible chat endpoint that streams a fixed answer
//! with a set first-token delay and token rate, for the load benchmark (the model's own time is
//! then known, so what the service adds can be told apart). Plain HTTP/1.1 over tokio: a tool
//! must not pull the service's HTTP stack, and the fake needs one route.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the fake model answers every request.
#[derive(Debug, Clone, Copy)]
pub struct FakeModel {
    /// From the request to the first token.
    pub first_token: Duration,
    /// Tokens per second after the first.
    pub tokens_per_sec: f64,
    /// Tokens in each answer.
    pub answer_tokens: usize,
}

/// The words the answer is made of, over and over: sentences as a model writes them (an
/// answer's first line opens with a capital), each word one token in cl100k, so the service
/// counts what was sent. The first token goes without its leading space.
const WORDS: &[&str] = &[
    " The", " loop", " runs", " once", " for", " each", " item", " in", " the", " list", ".",
    " Then", " it", " stops", ".",
];

/// The `i`-th token of an answer.
fn token(i: usize) -> &'static str {
    let word = WORDS[i % WORDS.len()];
    if i == 0 { word.trim_start() } else { word }
}
/// A request body larger than this is refused (the service's prompts are far smaller).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Serves `model` on `listener` until the process ends; counts the requests it answered.
pub async fn serve(listener: TcpListener, model: FakeModel, served: Arc<AtomicU64>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            if let Err(error) = connection(socket, model, &served).await {
                tracing::debug!(%error, "fake llm connection ended");
            }
        });
    }
}

/// Answers the requests of one keep-alive connection.
async fn connection(
    socket: TcpStream,
    model: FakeModel,
    served: &AtomicU64,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut reader = BufReader::new(socket);
    loop {
        let mut content_length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if first {
                first = false;
                if !line.starts_with("POST ") {
                    return respond(reader.get_mut(), "404 Not Found", "not found").await;
                }
                continue;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(usize::MAX);
            }
        }
        if content_length > MAX_BODY {
            return respond(reader.get_mut(), "413 Payload Too Large", "too large").await;
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).await?;
        served.fetch_add(1, Ordering::Relaxed);
        stream_answer(reader.get_mut(), model).await?;
    }
}

async fn respond(socket: &mut TcpStream, status: &str, text: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    socket.write_all(response.as_bytes()).await
}

/// One SSE chunk of the chat completion stream, as an HTTP/1.1 chunk.
fn event(data: &str) -> Vec<u8> {
    let payload = format!("data: {data}\n\n");
    format!("{:x}\r\n{payload}\r\n", payload.len()).into_bytes()
}

fn delta(content: &str) -> String {
    format!(
        "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\
         \"finish_reason\":null}}]}}"
    )
}

async fn stream_answer(socket: &mut TcpStream, model: FakeModel) -> std::io::Result<()> {
    socket
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .await?;
    let start = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / model.tokens_per_sec.max(0.001));
    for i in 0..model.answer_tokens {
        // On a schedule from the request, so a late wake-up does not push every later token.
        tokio::time::sleep_until(start + model.first_token + gap * i as u32).await;
        socket.write_all(&event(&delta(token(i)))).await?;
    }
    let usage = format!(
        "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"fake\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\
         \"usage\":{{\"prompt_tokens\":1000,\"completion_tokens\":{},\"total_tokens\":{}}}}}",
        model.answer_tokens,
        model.answer_tokens + 1000
    );
    socket.write_all(&event(&usage)).await?;
    socket.write_all(&event("[DONE]")).await?;
    socket.write_all(b"0\r\n\r\n").await?;
    socket.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_token_of_the_answer_is_one_cl100k_token_and_the_answer_opens_with_a_capital() {
        let bpe = tiktoken_rs::cl100k_base_singleton();
        for i in 0..2 * WORDS.len() {
            assert_eq!(bpe.encode_ordinary(token(i)).len(), 1, "{:?}", token(i));
        }
        assert_eq!(token(0), "The");
        assert_eq!(token(WORDS.len()), " The");
    }
}
