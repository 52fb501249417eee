//! Cuts a streamed Markdown answer into prose, which may flow at once, and code: fenced blocks,
//! held whole until their closing fence, and runs of lines that read as code outside fences,
//! held until a line of prose (or the end) closes them. Pure and synchronous: the guard feeds
//! it the model's deltas in order and gets back pieces in order.

/// One piece of the answer, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Prose(String),
    Code(CodeBlock),
}

/// A code block, exactly as the model wrote it: fenced, or a run of unfenced lines (no fences).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CodeBlock {
    /// The opening fence line, with its info string and newline ("```python\n"); empty for a
    /// run of unfenced code.
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
    /// Outside a fence, in a line: `held` is what of it has not been released yet; `released`:
    /// its start was let through as prose (the rest of it flows as it comes), and `held` keeps
    /// a copy of what went (up to [`JUDGED_LINE`] bytes) to judge the line when it ends.
    Line { held: String, released: bool },
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

/// How much of a line let through as prose is kept to read it whole when it ends.
const JUDGED_LINE: usize = 4096;

/// How far into a line (in bytes) its first letters are read for a sentence's start at every
/// character; past it, only when a word ends.
const OPENING: usize = 24;

/// Lines of code outside fences, held together: `blanks` are the blank lines after the last
/// code line, which join the run if code follows and go out as prose otherwise.
#[derive(Debug, Default)]
struct Run {
    body: String,
    blanks: String,
}

/// Splits streamed text into prose and held code blocks: fenced blocks, and (unless made with
/// [`Splitter::fenced_only`]) runs of lines that read as code outside fences
/// ([`super::unfenced`]), given out as blocks without fences. Outside fences a line is judged
/// when it ends; a line whose start can only be prose is let through from there on, so prose
/// waits at most for its line.
#[derive(Debug)]
pub struct Splitter {
    state: State,
    unfenced: bool,
    run: Option<Run>,
    /// What is known of the line being read outside fences, so that a long line is not read
    /// again at every character: it cannot open a fence; its start is not prose.
    not_a_fence: bool,
    not_prose: bool,
    /// The line being let through ended a run of code at its first letters.
    released_after_run: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Self {
            state: State::Line {
                held: String::new(),
                released: false,
            },
            unfenced: true,
            run: None,
            not_a_fence: false,
            not_prose: false,
            released_after_run: false,
        }
    }
}

impl Splitter {
    /// A splitter that holds fenced blocks only (prose flows character by character).
    pub fn fenced_only() -> Self {
        Self {
            unfenced: false,
            ..Self::default()
        }
    }

    /// Whether code is held: a fenced block opened and not yet closed, or a run of unfenced
    /// lines.
    pub fn is_in_block(&self) -> bool {
        self.run.as_ref().is_some_and(|run| !run.body.is_empty())
            || matches!(self.state, State::Opening { .. } | State::InBlock { .. })
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
        let mut prose = String::new();
        let line = State::Line {
            held: String::new(),
            released: false,
        };
        match std::mem::replace(&mut self.state, line) {
            State::Line { held, released } => {
                if released {
                    // Already given out; only a copy was kept.
                } else if !self.unfenced {
                    prose.push_str(&held);
                } else if !held.is_empty() {
                    self.judge_line(held, &mut prose, &mut out);
                }
                self.close_run(&mut prose, &mut out);
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
        flush_prose(&mut prose, &mut out);
        out
    }

    fn step(&mut self, c: char, prose: &mut String, out: &mut Vec<Piece>) {
        let line = State::Line {
            held: String::new(),
            released: false,
        };
        let state = std::mem::replace(&mut self.state, line);
        self.state = match state {
            State::Line {
                mut held,
                released: true,
            } => {
                prose.push(c);
                if c == '\n' {
                    self.after_released_line(&held);
                    State::Line {
                        held: String::new(),
                        released: false,
                    }
                } else {
                    // Kept only where the line will be judged (with unfenced code held).
                    if self.unfenced && held.len() < JUDGED_LINE {
                        held.push(c);
                    }
                    State::Line {
                        held,
                        released: true,
                    }
                }
            }
            State::Line {
                mut held,
                released: false,
            } => {
                if held.is_empty() {
                    self.not_a_fence = false;
                    self.not_prose = false;
                }
                held.push(c);
                let fence = if self.not_a_fence {
                    FencePrefix::No
                } else {
                    fence_prefix(&held)
                };
                self.not_a_fence = matches!(fence, FencePrefix::No);
                match fence {
                    FencePrefix::Fence(fence, len) => {
                        self.close_run(prose, out);
                        flush_prose(prose, out);
                        State::Opening {
                            fence,
                            len,
                            line: held,
                        }
                    }
                    _ if c == '\n' => {
                        if self.unfenced {
                            self.judge_line(held, prose, out);
                        } else {
                            prose.push_str(&held);
                        }
                        State::Line {
                            held: String::new(),
                            released: false,
                        }
                    }
                    FencePrefix::Maybe => State::Line {
                        held,
                        released: false,
                    },
                    FencePrefix::No if !self.unfenced => {
                        prose.push_str(&held);
                        State::Line {
                            held: String::new(),
                            released: true,
                        }
                    }
                    FencePrefix::No if self.starts_as_prose(&held, c) => {
                        self.released_after_run = self.run.is_some();
                        self.close_run(prose, out);
                        prose.push_str(&held);
                        State::Line {
                            held,
                            released: true,
                        }
                    }
                    FencePrefix::No => State::Line {
                        held,
                        released: false,
                    },
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
                    State::Line {
                        held: String::new(),
                        released: false,
                    }
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

    /// Whether the line read so far (`held`, ending in `c`) may be let through as prose: it
    /// opens as a sentence (which ends a run of code, if one is open) or, with no run open, as
    /// a Markdown block, or its first three words are plain words. Read at every character of
    /// its first few, then (with no run open) only when a word ends, and no more once its
    /// first three words said no.
    fn starts_as_prose(&mut self, held: &str, c: char) -> bool {
        if self.not_prose || !(c.is_whitespace() || held.len() <= OPENING) {
            return false;
        }
        if self.run.is_some() {
            return held.len() <= OPENING && super::unfenced::starts_as_sentence(held);
        }
        match super::unfenced::prose_start(held) {
            Some(prose) => {
                self.not_prose = !prose;
                prose
            }
            None => false,
        }
    }

    /// A line let through as prose from its start has ended (`line`: what of it was kept, without
    /// its newline). If, read whole, it was code after all (a capitalised name opened it, or went
    /// on a run of code), the lines after it are read as going on a run of code, so that at most
    /// that one line of code was shown unchecked.
    fn after_released_line(&mut self, line: &str) {
        use super::unfenced::{continues_code, is_code_line};
        let after_run = std::mem::take(&mut self.released_after_run);
        if !self.unfenced || self.run.is_some() || line.len() >= JUDGED_LINE {
            return;
        }
        let code = if after_run {
            continues_code(line)
        } else {
            is_code_line(line)
        };
        if code {
            self.run = Some(Run::default());
        }
    }

    /// A whole line outside fences: it starts or goes on a run of code, or it is prose (which
    /// ends the run).
    fn judge_line(&mut self, line: String, prose: &mut String, out: &mut Vec<Piece>) {
        use super::unfenced::{continues_code, is_code_line};
        if line.trim().is_empty() {
            match &mut self.run {
                Some(run) => run.blanks.push_str(&line),
                None => prose.push_str(&line),
            }
            return;
        }
        let code = match &self.run {
            Some(_) => continues_code(&line),
            None => is_code_line(&line),
        };
        if code {
            let run = self.run.get_or_insert_with(Run::default);
            let blanks = std::mem::take(&mut run.blanks);
            run.body.push_str(&blanks);
            run.body.push_str(&line);
        } else {
            self.close_run(prose, out);
            prose.push_str(&line);
        }
    }

    /// Gives out the run of unfenced code held, if any, as a block without fences; the blank
    /// lines after it go on as prose.
    fn close_run(&mut self, prose: &mut String, out: &mut Vec<Piece>) {
        if let Some(run) = self.run.take() {
            if !run.body.is_empty() {
                flush_prose(prose, out);
                out.push(Piece::Code(CodeBlock {
                    body: run.body,
                    ..CodeBlock::default()
                }));
            }
            prose.push_str(&run.blanks);
        }
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
            UNFENCED,
            "x = 1\n\n\n",
            "    indented\n```\ncode\n```\ntotal = 0",
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
        assert_eq!(
            splitter.push("Hello there my "),
            vec![Piece::Prose("Hello there my ".into())]
        );
        assert_eq!(
            splitter.push("friend\n``"),
            vec![Piece::Prose("friend\n".into())]
        );
        assert_eq!(splitter.push("`py\nsecret()\n"), vec![]);
        let closed = splitter.push("```\n");
        assert!(matches!(&closed[..], [Piece::Code(b)] if b.body == "secret()\n"));
    }

    #[test]
    fn a_line_that_may_still_be_code_waits_for_its_end_and_no_longer() {
        let mut splitter = Splitter::default();
        assert_eq!(splitter.push("H"), vec![], "one capital may open a name");
        assert_eq!(splitter.push("ello"), vec![Piece::Prose("Hello".into())]);
        assert_eq!(splitter.push("!\n"), vec![Piece::Prose("!\n".into())]);
        assert_eq!(splitter.push("for each row"), vec![]);
        assert_eq!(
            splitter.push(", add it.\n"),
            vec![Piece::Prose("for each row, add it.\n".into())]
        );
        let mut fenced = Splitter::fenced_only();
        assert_eq!(fenced.push("Hello"), vec![Piece::Prose("Hello".into())]);
    }

    const UNFENCED: &str = "Here it is:\n\ndef total(rows):\n    s = 0\n\n    for r in rows:\n        s += r\n    return s\n\nCall it with your rows.\n";

    #[test]
    fn a_run_of_unfenced_code_is_held_until_a_line_of_prose_whatever_the_delta_sizes() {
        let whole = split_in_pieces(UNFENCED, 1000);
        assert_eq!(
            whole,
            vec![
                Piece::Prose("Here it is:\n\n".into()),
                Piece::Code(CodeBlock {
                    body: "def total(rows):\n    s = 0\n\n    for r in rows:\n        s += r\n    return s\n".into(),
                    ..CodeBlock::default()
                }),
                Piece::Prose("\nCall it with your rows.\n".into()),
            ]
        );
        for step in 1..12 {
            assert_eq!(split_in_pieces(UNFENCED, step), whole, "step {step}");
        }
        let mut splitter = Splitter::default();
        splitter.push("Here it is:\n\ndef total(rows):\n    s = 0\n");
        assert!(splitter.is_in_block());
        // A sentence after the run ends it at its first letters, not at its end.
        let next = splitter.push("\nCa");
        assert!(
            matches!(&next[..], [Piece::Code(b), Piece::Prose(p)] if b.body.ends_with("s = 0\n") && p == "\nCa"),
            "{next:?}"
        );
        assert!(!splitter.is_in_block());
        // A comment goes on a run: `#` ends it only with no run open.
        let mut splitter = Splitter::default();
        splitter.push("total = 0\n# add them\n");
        assert!(splitter.is_in_block());
    }

    #[test]
    fn a_line_of_code_opened_by_a_capitalised_name_flows_but_the_lines_after_it_are_held() {
        let text = "Scanner in = new Scanner(System.in);\nint n = in.nextInt();\nreturn n * 2;\n\nThat reads one number.\n";
        for step in 1..12 {
            let pieces = split_in_pieces(text, step);
            assert_eq!(
                pieces,
                vec![
                    Piece::Prose("Scanner in = new Scanner(System.in);\n".into()),
                    Piece::Code(CodeBlock {
                        body: "int n = in.nextInt();\nreturn n * 2;\n".into(),
                        ..CodeBlock::default()
                    }),
                    Piece::Prose("\nThat reads one number.\n".into()),
                ],
                "step {step}"
            );
        }
        // A sentence's line opens no run: the line after it is judged by itself.
        assert_eq!(
            split_in_pieces("The loop ends.\n    and then you print it.\n", 4),
            vec![Piece::Prose(
                "The loop ends.\n    and then you print it.\n".into()
            )]
        );
    }

    #[test]
    fn indented_code_is_a_run_and_a_run_left_open_is_released_at_the_end_for_the_check() {
        let text = "Like this:\n\n    total = 0\n    for n in numbers:\n        total += n";
        let pieces = split_in_pieces(text, 3);
        assert_eq!(pieces.len(), 2, "{pieces:?}");
        assert!(
            matches!(&pieces[1], Piece::Code(b) if b.opening.is_empty() && b.body.ends_with("total += n")),
            "{pieces:?}"
        );
        let fenced_only = {
            let mut splitter = Splitter::fenced_only();
            let mut out = splitter.push(text);
            out.extend(splitter.finish());
            out
        };
        assert_eq!(fenced_only, vec![Piece::Prose(text.into())]);
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
