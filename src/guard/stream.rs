//! Cuts a streamed Markdown answer into prose, which may flow at once, and fenced code blocks,
//! which are held whole until their closing fence. Pure and synchronous: the guard feeds it the
//! model's deltas in order and gets back pieces in order.

/// One piece of the answer, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Prose(String),
    Code(CodeBlock),
}

/// A fenced code block, exactly as the model wrote it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CodeBlock {
    /// The opening fence line, with its info string and newline ("```python\n").
    pub opening: String,
    pub body: String,
    /// The closing fence line; empty when the stream ended inside the block.
    pub closing: String,
}

impl CodeBlock {
    pub fn text(&self) -> String {
        format!("{}{}{}", self.opening, self.body, self.closing)
    }

    /// The language named after the opening fence ("python"), if any.
    pub fn language(&self) -> Option<&str> {
        self.opening
            .trim_start()
            .trim_start_matches(['`', '~'])
            .split_whitespace()
            .next()
    }

    pub fn n_lines(&self) -> usize {
        self.body.lines().filter(|l| !l.trim().is_empty()).count()
    }
}

#[derive(Debug)]
enum State {
    /// In a line of prose that cannot open a fence.
    Prose,
    /// At the start of a line: what has come of it might still be a fence.
    LineStart(String),
    /// Reading the opening fence line up to its newline.
    Opening {
        fence: char,
        len: usize,
        line: String,
    },
    /// Inside a block: `line` is the part of the current line read so far.
    InBlock {
        fence: char,
        len: usize,
        block: CodeBlock,
        line: String,
    },
}

/// Splits streamed text into prose and held code blocks.
#[derive(Debug)]
pub struct Splitter {
    state: State,
}

impl Default for Splitter {
    fn default() -> Self {
        Self {
            state: State::LineStart(String::new()),
        }
    }
}

impl Splitter {
    /// Whether a code block has opened and not yet closed.
    pub fn is_in_block(&self) -> bool {
        matches!(self.state, State::Opening { .. } | State::InBlock { .. })
    }

    /// Feeds one delta; returns what can be released now, in order.
    pub fn push(&mut self, delta: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut prose = String::new();
        for c in delta.chars() {
            self.step(c, &mut prose, &mut out);
        }
        flush_prose(&mut prose, &mut out);
        out
    }

    /// The end of the stream: whatever is held is released (a block left open as it is).
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Prose) {
            State::Prose => {}
            State::LineStart(held) => {
                if !held.is_empty() {
                    out.push(Piece::Prose(held));
                }
            }
            State::Opening { line, .. } => out.push(Piece::Code(CodeBlock {
                opening: line,
                ..CodeBlock::default()
            })),
            State::InBlock {
                fence,
                len,
                mut block,
                line,
            } => {
                if is_closing(&line, fence, len) {
                    block.closing = line;
                } else {
                    block.body.push_str(&line);
                }
                out.push(Piece::Code(block));
            }
        }
        self.state = State::LineStart(String::new());
        out
    }

    fn step(&mut self, c: char, prose: &mut String, out: &mut Vec<Piece>) {
        let state = std::mem::replace(&mut self.state, State::Prose);
        self.state = match state {
            State::Prose => {
                prose.push(c);
                if c == '\n' {
                    State::LineStart(String::new())
                } else {
                    State::Prose
                }
            }
            State::LineStart(mut held) => {
                held.push(c);
                match fence_prefix(&held) {
                    FencePrefix::Maybe => State::LineStart(held),
                    FencePrefix::Fence(fence, len) => {
                        flush_prose(prose, out);
                        State::Opening {
                            fence,
                            len,
                            line: held,
                        }
                    }
                    FencePrefix::No => {
                        prose.push_str(&held);
                        if c == '\n' {
                            State::LineStart(String::new())
                        } else {
                            State::Prose
                        }
                    }
                }
            }
            State::Opening {
                fence,
                mut len,
                mut line,
            } => {
                // The fence may be longer than three characters.
                if c == fence && line.trim_start().chars().all(|x| x == fence) {
                    len += 1;
                }
                line.push(c);
                if c == '\n' {
                    State::InBlock {
                        fence,
                        len,
                        block: CodeBlock {
                            opening: line,
                            ..CodeBlock::default()
                        },
                        line: String::new(),
                    }
                } else {
                    State::Opening { fence, len, line }
                }
            }
            State::InBlock {
                fence,
                len,
                mut block,
                mut line,
            } => {
                line.push(c);
                if c != '\n' {
                    State::InBlock {
                        fence,
                        len,
                        block,
                        line,
                    }
                } else if is_closing(&line, fence, len) {
                    block.closing = line;
                    out.push(Piece::Code(block));
                    State::LineStart(String::new())
                } else {
                    block.body.push_str(&line);
                    State::InBlock {
                        fence,
                        len,
                        block,
                        line: String::new(),
                    }
                }
            }
        };
    }
}

fn flush_prose(prose: &mut String, out: &mut Vec<Piece>) {
    if prose.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(Piece::Prose(last)) => last.push_str(prose),
        _ => out.push(Piece::Prose(prose.clone())),
    }
    prose.clear();
}

enum FencePrefix {
    Maybe,
    Fence(char, usize),
    No,
}

/// Whether the start of a line opens a fence (CommonMark: up to three spaces, then three or
/// more backticks or tildes).
fn fence_prefix(line: &str) -> FencePrefix {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return FencePrefix::No;
    }
    let rest = &line[indent..];
    let Some(fence) = rest.chars().next() else {
        return FencePrefix::Maybe;
    };
    if fence != '`' && fence != '~' {
        return FencePrefix::No;
    }
    let run = rest.chars().take_while(|c| *c == fence).count();
    if run >= 3 {
        FencePrefix::Fence(fence, 3)
    } else if run == rest.chars().count() {
        FencePrefix::Maybe
    } else {
        FencePrefix::No
    }
}

fn is_closing(line: &str, fence: char, len: usize) -> bool {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return false;
    }
    let run = trimmed.chars().take_while(|c| *c == fence).count();
    run >= len && trimmed[run * fence.len_utf8()..].trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_in_pieces(text: &str, step: usize) -> Vec<Piece> {
        let mut splitter = Splitter::default();
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for chunk in chars.chunks(step) {
            out.extend(splitter.push(&chunk.iter().collect::<String>()));
        }
        out.extend(splitter.finish());
        merge(out)
    }

    fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::new();
        for piece in pieces {
            match (out.last_mut(), piece) {
                (Some(Piece::Prose(a)), Piece::Prose(b)) => a.push_str(&b),
                (_, piece) => out.push(piece),
            }
        }
        out
    }

    const ANSWER: &str = "Try this:\n\n```python\nx = [1]\n``` not a close\n```\nThen `y` [1].\n";

    #[test]
    fn prose_and_blocks_come_out_the_same_whatever_the_delta_sizes() {
        let whole = split_in_pieces(ANSWER, 1000);
        assert_eq!(
            whole,
            vec![
                Piece::Prose("Try this:\n\n".into()),
                Piece::Code(CodeBlock {
                    opening: "```python\n".into(),
                    body: "x = [1]\n``` not a close\n".into(),
                    closing: "```\n".into(),
                }),
                Piece::Prose("Then `y` [1].\n".into()),
            ]
        );
        for step in 1..12 {
            assert_eq!(split_in_pieces(ANSWER, step), whole, "step {step}");
        }
    }

    #[test]
    fn nothing_is_lost_or_reordered() {
        for text in [
            ANSWER,
            "no fence at all",
            "``",
            "~~~\nopen",
            "````\na\n```\nb\n````",
        ] {
            let joined: String = split_in_pieces(text, 3)
                .into_iter()
                .map(|p| match p {
                    Piece::Prose(t) => t,
                    Piece::Code(b) => b.text(),
                })
                .collect();
            assert_eq!(joined, text);
        }
    }

    #[test]
    fn prose_is_released_as_it_comes_and_a_block_only_when_it_closes() {
        let mut splitter = Splitter::default();
        assert_eq!(splitter.push("Hello"), vec![Piece::Prose("Hello".into())]);
        assert_eq!(
            splitter.push(" there\n``"),
            vec![Piece::Prose(" there\n".into())]
        );
        assert_eq!(splitter.push("`py\nsecret()\n"), vec![]);
        let closed = splitter.push("```\n");
        assert!(matches!(&closed[..], [Piece::Code(b)] if b.body == "secret()\n"));
    }

    #[test]
    fn a_longer_fence_is_closed_only_by_one_as_long() {
        let pieces = split_in_pieces("````md\n```\ninner\n```\n````\n", 1);
        assert!(matches!(&pieces[..], [Piece::Code(b)] if b.body == "```\ninner\n```\n"));
    }

    #[test]
    fn a_block_left_open_is_released_at_the_end_for_the_check() {
        let pieces = split_in_pieces("a\n```js\nlet x;\n", 2);
        assert!(
            matches!(&pieces[1], Piece::Code(b) if b.closing.is_empty() && b.body == "let x;\n")
        );
        assert_eq!(
            CodeBlock {
                opening: "```js\n".into(),
                ..Default::default()
            }
            .language(),
            Some("js")
        );
    }
}
